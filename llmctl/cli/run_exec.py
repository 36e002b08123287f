"""What `llmctl run` does once its command line is read, by either parser (the Typer command in
:mod:`.run_cmd`, the fast path in :mod:`.fast`): prompt from the argument and/or stdin, the
answer streamed to stdout, the library's notes to stderr. Errors are raised for the caller's
funnel (:mod:`.report`). Imports no Typer."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import UsageError
from ..output import Output

CLI_TOOLS = ("llama-completion", "llama-cli", "llama-mtmd-cli")


@dataclass
class RunOptions:
    """run's parameters: the ones that steer the command, and ``values``, the sampling options
    that were given (every other parameter of the `run` command)."""

    prompt: str | None
    task: str | None
    profile: str | None
    mode: str
    set: list[str]  #: --set (the parameter `set_` of the command)
    image: list[str]
    cli_tool: str | None
    json: bool
    dry_run: bool
    timeout: float
    quiet: bool
    values: dict[str, Any] = field(default_factory=dict)
    files: list[str] | None = None  #: -f/--file before `run`

    @classmethod
    def from_params(cls, params: dict[str, Any], files: list[str] | None) -> RunOptions:
        """From the `run` command's parameters by name, as Typer or the fast path read them."""
        steer = {f.name for f in fields(cls)} - {"values", "files", "set"}
        values = {k: v for k, v in params.items() if k not in steer and k != "set_" and not _unset(v)}
        kw = {k: params[k] for k in steer}
        kw["image"] = list(kw["image"] or [])
        return cls(**kw, set=list(params["set_"] or []), values=values, files=files)


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and not value)


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


def _overrides(opts: RunOptions) -> dict[str, Any]:
    """--set, then the sampling options given (which win)."""
    from ..inference.params import parse_set

    overrides = parse_set(opts.set)
    for key, value in opts.values.items():
        overrides[key] = list(value) if isinstance(value, (list, tuple)) else value
    return overrides


def execute_run(opts: RunOptions, out: Output | None = None) -> None:
    """Do what `llmctl run` does. Raises LlmctlError (the caller maps it to an exit code)."""
    from ..profiles.loader import load

    out = out or Output(opts.json)
    overrides = _overrides(opts)
    if opts.cli_tool is not None and opts.cli_tool not in CLI_TOOLS:
        raise UsageError(f"--cli-tool {opts.cli_tool!r}: expected one of {', '.join(CLI_TOOLS)}")
    text = read_prompt(opts.prompt)
    config = load(opts.files)
    kw: dict[str, Any] = dict(task=opts.task, profile=opts.profile, mode=opts.mode, overrides=overrides,
                              images=list(opts.image), config=config, tool=opts.cli_tool)
    if opts.dry_run:
        from ..inference.run import dry_run

        out.data(dry_run(text, **kw))
        return
    _answer(opts, text, kw, out)


def _answer(opts: RunOptions, text: str, kw: dict[str, Any], out: Output) -> None:
    """Stream the answer to stdout (or print it as JSON); notes go to stderr unless --quiet."""
    from ..inference.run import run_task

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
