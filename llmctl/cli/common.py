"""Shared pieces of the Typer commands: option aliases and the error handler. The `-f` files
and loading the profiles live in :mod:`.context`, the error funnel in :mod:`.report`."""

from __future__ import annotations

import functools
from typing import Annotated, Callable, List, Optional

import typer

from ..errors import LlmctlError
from .completers import complete_profiles
from .context import STATE, load_config
from .report import report

__all__ = ["STATE", "JsonOpt", "NameArg", "NamesArg", "OptNamesArg", "handle_errors", "load_config"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for scripts).")]
NamesArg = Annotated[List[str], typer.Argument(help="Profile names.", show_default=False,
                                               autocompletion=complete_profiles)]
OptNamesArg = Annotated[Optional[List[str]], typer.Argument(help="Profile names (default: all).", show_default=False,
                                                            autocompletion=complete_profiles)]
NameArg = Annotated[str, typer.Argument(help="Profile name.", autocompletion=complete_profiles)]


def handle_errors(fn: Callable) -> Callable:
    """Turn llmctl errors and Ctrl-C into their message and exit code (:func:`.report.report`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (LlmctlError, KeyboardInterrupt) as err:
            raise typer.Exit(report(err)) from None

    return wrapper
