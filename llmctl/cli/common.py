"""Shared pieces of the CLI: option aliases, the error handler, loading profiles."""

from __future__ import annotations

import functools
from typing import Annotated, Callable, List, Optional

import typer

from ..errors import ExitCode, LlmctlError, describe
from ..output import Output


def _complete_profiles(ctx: typer.Context, incomplete: str) -> list[str]:
    from .completion_cmd import complete_profiles

    return complete_profiles(ctx, incomplete)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for scripts).")]
NamesArg = Annotated[List[str], typer.Argument(help="Profile names.", show_default=False,
                                               autocompletion=_complete_profiles)]
OptNamesArg = Annotated[Optional[List[str]], typer.Argument(help="Profile names (default: all).", show_default=False,
                                                            autocompletion=_complete_profiles)]
NameArg = Annotated[str, typer.Argument(help="Profile name.", autocompletion=_complete_profiles)]


class State:
    """What the app callback collects for every command."""

    files: list[str] | None = None


STATE = State()


def load_config(required: bool = True):
    """Load the profiles from -f/LLMCTL_PROFILES/./llmctl.yaml/./profiles/XDG."""
    from ..profiles import load

    return load(STATE.files)


def handle_errors(fn: Callable) -> Callable:
    """Turn llmctl errors into a message + hint on stderr and the table's exit code;
    Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = Output()
        try:
            return fn(*args, **kwargs)
        except LlmctlError as err:
            code, msg, hint = describe(err)
            out.error(msg, hint, err.detail)
            raise typer.Exit(int(code)) from None
        except KeyboardInterrupt:
            out.error("interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper
