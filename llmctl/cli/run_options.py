"""`llmctl run`'s options, for the fast path (llmctl/cli/fast.py), which imports no Typer.

Generated from the `run` command's signature (llmctl/cli/run_cmd.py) by
`python -m llmctl.cli.run_table`: do not edit. tests/test_cli_front_door.py checks it is current.
"""

from __future__ import annotations

from typing import Any

#: the positional argument
ARGUMENT = "prompt"
#: options that take a value: spellings -> (parameter, type, repeatable)
VALUE_OPTIONS: dict[tuple[str, ...], tuple[str, type, bool]] = {
    ("--task", "-t"): ("task", str, False),
    ("--profile",): ("profile", str, False),
    ("--mode", "-m"): ("mode", str, False),
    ("--temperature",): ("temperature", float, False),
    ("--top-p",): ("top_p", float, False),
    ("--top-k",): ("top_k", int, False),
    ("--min-p",): ("min_p", float, False),
    ("--repeat-penalty",): ("repeat_penalty", float, False),
    ("--presence-penalty",): ("presence_penalty", float, False),
    ("--frequency-penalty",): ("frequency_penalty", float, False),
    ("--seed",): ("seed", int, False),
    ("--max-tokens", "-n"): ("max_tokens", int, False),
    ("--stop",): ("stop", str, True),
    ("--system",): ("system", str, False),
    ("--set",): ("set_", str, True),
    ("--image",): ("image", str, True),
    ("--cli-tool",): ("cli_tool", str, False),
    ("--timeout",): ("timeout", float, False),
}
#: on/off options: spellings -> parameter
FLAG_OPTIONS: dict[tuple[str, ...], str] = {
    ("--json",): "json",
    ("--dry-run",): "dry_run",
    ("--quiet", "-q"): "quiet",
}
#: each parameter's value when its option is not given
DEFAULTS: dict[str, Any] = {
    "prompt": None,
    "task": None,
    "profile": None,
    "mode": "auto",
    "temperature": None,
    "top_p": None,
    "top_k": None,
    "min_p": None,
    "repeat_penalty": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "seed": None,
    "max_tokens": None,
    "stop": None,
    "system": None,
    "set_": None,
    "image": None,
    "cli_tool": None,
    "json": False,
    "dry_run": False,
    "timeout": 300.0,
    "quiet": False,
}
