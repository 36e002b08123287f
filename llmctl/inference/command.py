"""The `run` command's behaviour, apart from any argument parser: prompt from the argument
and/or stdin, the answer streamed to stdout, notes to stderr, errors to exit codes.

Two parsers feed it: the Typer command in :mod:`llmctl.cli.run_cmd` (help, completion, usage
errors), and :func:`fast_main`, which reads the usual `run` command lines without importing
Typer (Typer and Click cost more at start-up than a short answer from a local server). Any
command line :func:`fast_main` is not sure about (``--help``, an unknown or malformed option)
is left to the Typer command. ``tests/test_run_cli.py`` checks that both accept the same options.

    python -m llmctl.inference.command run --task summary "text"    # the fast path itself
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExitCode, LlmctlError, UsageError
from ..output import Output

#: run's options that carry a value: option spellings -> (destination, type, repeatable)
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
    ("--set",): ("set", str, True),
    ("--image",): ("image", str, True),
    ("--cli-tool",): ("cli_tool", str, False),
    ("--timeout",): ("timeout", float, False),
}
#: run's on/off options: spellings -> destination
FLAG_OPTIONS: dict[tuple[str, ...], str] = {
    ("--json",): "json",
    ("--dry-run",): "dry_run",
    ("--quiet", "-q"): "quiet",
}
#: the sampling options with their own flag (the rest go through --set)
SAMPLING_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
                    "frequency_penalty", "seed", "max_tokens", "stop", "system")
CLI_TOOLS = ("llama-completion", "llama-cli", "llama-mtmd-cli")


@dataclass
class RunOptions:
    prompt: str | None = None
    task: str | None = None
    profile: str | None = None
    mode: str = "auto"
    values: dict[str, Any] = field(default_factory=dict)  #: the sampling options given (None: not given)
    set: list[str] = field(default_factory=list)
    image: list[str] = field(default_factory=list)
    cli_tool: str | None = None
    json: bool = False
    dry_run: bool = False
    timeout: float = 300.0
    quiet: bool = False
    files: list[str] | None = None  #: -f/--file before `run`


class _StdoutClosed(Exception):
    """stdout went away (e.g. `| head -c 100`): stop generating, exit quietly."""


def read_prompt(prompt: str | None) -> str:
    """PROMPT, `-` (stdin), or piped stdin. PROMPT plus piped stdin gives PROMPT followed by the
    piped text as context (as Ollama does). With a PROMPT, stdin is read only when it is a pipe
    or a file, so a script that leaves a terminal or /dev/null on stdin is never blocked."""
    if prompt in (None, "-"):
        if prompt is None and sys.stdin.isatty():
            raise UsageError("give a PROMPT, or pipe text on stdin (`echo TEXT | llmctl run --task T`)")
        text = sys.stdin.read()
    else:
        text = prompt
        if _stdin_has_data():
            piped = sys.stdin.read()
            if piped.strip():
                text = f"{prompt}\n\n{piped}"
    if not text.strip():
        raise UsageError("the prompt is empty")
    return text


def _stdin_has_data() -> bool:
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def execute_run(opts: RunOptions, out: Output | None = None) -> None:
    """Do what `llmctl run` does. Raises LlmctlError (the caller maps it to an exit code)."""
    from ..profiles.loader import load
    from .params import parse_set

    out = out or Output(opts.json)
    overrides = parse_set(opts.set)
    for key in SAMPLING_OPTIONS:
        value = opts.values.get(key)
        if value is not None and value != []:
            overrides[key] = list(value) if key == "stop" else value
    if opts.cli_tool is not None and opts.cli_tool not in CLI_TOOLS:
        raise UsageError(f"--cli-tool {opts.cli_tool!r}: expected one of {', '.join(CLI_TOOLS)}")
    text = read_prompt(opts.prompt)
    config = load(opts.files)
    kw = dict(task=opts.task, profile=opts.profile, mode=opts.mode, overrides=overrides, images=list(opts.image),
              config=config, tool=opts.cli_tool)
    if opts.dry_run:
        from .run import dry_run

        out.data(dry_run(text, **kw))
        return
    from .run import run_task

    streamed: list[str] = []

    def on_text(piece: str) -> None:
        streamed.append(piece)
        try:
            out.text(piece, end="")
        except BrokenPipeError:
            raise _StdoutClosed() from None

    def on_note(msg: str) -> None:
        if not opts.quiet:
            out.note(msg)

    try:
        result = run_task(text, timeout=opts.timeout or None, on_text=None if opts.json else on_text,
                          on_note=on_note, **kw)
        if opts.json:
            out.data(result.to_dict())
        elif streamed and not streamed[-1].endswith("\n"):
            out.text("")
    except (_StdoutClosed, BrokenPipeError):
        _silence_stdout()
        return
    if not result.text and not opts.quiet:
        out.warn(f"{result.profile} returned no text (finish reason: {result.finish_reason})")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the exit-time flush does not fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def report(err: LlmctlError, out: Output) -> int:
    """Print an error with its hint (from the one error table) and return its exit code."""
    from ..errors import describe

    code, msg, hint = describe(err)
    out.error(msg, hint, err.detail)
    return int(code)


# -- the fast path ---------------------------------------------------------------------------
def parse_fast(argv: list[str]) -> RunOptions | None:
    """``[-f FILE]... run [options] [PROMPT]`` -> options; None when anything is unusual."""
    files: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i].startswith("--file="):
            files.append(argv[i][7:])
            i += 1
        elif argv[i] in ("-f", "--file") and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 2
        else:
            break
    if i >= len(argv) or argv[i] != "run":
        return None
    opts = RunOptions(files=files or None)
    values: dict[str, Any] = {}
    by_name = {n: spec for names, spec in VALUE_OPTIONS.items() for n in names}
    flags = {n: dest for names, dest in FLAG_OPTIONS.items() for n in names}
    positional: list[str] = []
    args = argv[i + 1:]
    j = 0
    while j < len(args):
        a = args[j]
        j += 1
        if a == "--":
            positional += args[j:]
            break
        if a.startswith("-") and a != "-":
            name, eq, inline = a.partition("=")
            if name in flags and not eq:
                setattr(opts, flags[name], True)
                continue
            if name not in by_name or (eq and not name.startswith("--")):
                return None  # --help, unknown options, bundled short flags: the full CLI decides
            if eq:
                raw = inline
            elif j < len(args):
                raw = args[j]
                j += 1
            else:
                return None
            dest, tp, many = by_name[name]
            try:
                value = tp(raw)
            except ValueError:
                return None
            if many:
                values.setdefault(dest, []).append(value)
            else:
                values[dest] = value
            continue
        positional.append(a)
    if len(positional) > 1:
        return None
    opts.prompt = positional[0] if positional else None
    for dest in ("task", "profile", "mode", "cli_tool", "timeout"):
        if dest in values:
            setattr(opts, dest, values.pop(dest))
    opts.set = values.pop("set", [])
    opts.image = values.pop("image", [])
    opts.values = values
    return opts


def fast_main(argv: list[str]) -> int | None:
    """Run a `run` command line without Typer; the exit code, or None if the full CLI must parse it."""
    opts = parse_fast(argv)
    if opts is None:
        return None
    out = Output(opts.json)
    try:
        execute_run(opts, out)
    except LlmctlError as err:
        return report(err, out)
    except KeyboardInterrupt:
        out.error("interrupted")
        return int(ExitCode.INTERRUPTED)
    return 0


if __name__ == "__main__":
    code = fast_main(sys.argv[1:])
    if code is None:
        from ..cli.app import main

        main()
    else:
        sys.exit(code)
