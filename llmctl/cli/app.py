"""The `llmctl` command: the root options. Each command group lives in its own module, named
in llmctl/cli/lazy.py, which converts a command only when it is used."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .context import STATE
from .lazy import LazyGroup

app = typer.Typer(
    cls=LazyGroup,  # the commands (llmctl/cli/lazy.py WHERE) are converted when used
    rich_markup_mode=None,
    name="llmctl",
    help="Run local LLM servers (llama.cpp, vLLM) from YAML profiles: up, down, status, logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    file: Annotated[Optional[List[str]], typer.Option(
        "-f", "--file", help="Profile file or directory (repeatable). Default: $LLMCTL_PROFILES, "
        "./llmctl.yaml + ./profiles/*.yaml, else $XDG_CONFIG_HOME/llmctl/profiles.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    STATE.files = list(file) if file else None


def main() -> None:
    import os

    if "_LLMCTL_COMPLETE" in os.environ:  # a shell asking for completions (see `llmctl completion`)
        from .completers import init_completion

        init_completion()
    app()
