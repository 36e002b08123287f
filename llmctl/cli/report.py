"""The one funnel from errors to exit codes, for the Typer commands (``common.handle_errors``)
and the fast path (``fast.py``) alike: the message and hint come from the error table
(:func:`llmctl.errors.describe`), printed on stderr; Ctrl-C is "interrupted" and exit 130.
Imports no Typer, so the fast path can use it."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ExitCode, LlmctlError, describe
from ..output import Output


def report(err: LlmctlError | KeyboardInterrupt, out: Output | None = None) -> int:
    """Print ``err`` (message, detail, hint) on stderr and return its exit code."""
    out = out or Output()
    if isinstance(err, KeyboardInterrupt):
        out.error("interrupted")
        return int(ExitCode.INTERRUPTED)
    code, msg, hint = describe(err)
    out.error(msg, hint, err.detail)
    return int(code)


def guarded(fn: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    """Call ``fn``; its exit code (None counts as 0), or the reported error's."""
    try:
        return fn(*args, **kwargs) or 0
    except (LlmctlError, KeyboardInterrupt) as err:
        return report(err)
