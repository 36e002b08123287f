"""`completion bash|zsh|fish [--install]`.

The scripts are click's shell-completion scripts (through its public API): at each TAB the
shell runs `llmctl` with `_LLMCTL_COMPLETE` set, and the completers of :mod:`.completers`
answer with the profile, task and model names of the user's own files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..output import Output
from .common import handle_errors
from .completers import init_completion

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_LLMCTL_COMPLETE"


def script(shell: str) -> str:
    from click.shell_completion import get_completion_class

    from .app import app

    init_completion()
    cls = get_completion_class(shell)
    if cls is None:
        raise typer.BadParameter(f"unknown shell {shell!r} (bash, zsh or fish)")
    return cls(typer.main.get_command(app), {}, "llmctl", COMPLETE_VAR).source()


def install_path(shell: str) -> Path:
    home = Path.home()
    if shell == "bash":
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
        return base / "bash-completion" / "completions" / "llmctl"
    if shell == "zsh":
        return Path(os.environ.get("ZDOTDIR") or home) / ".zfunc" / "_llmctl"
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "fish" / "completions" / "llmctl.fish"


def completion(shell: Annotated[str, typer.Argument(help="bash, zsh or fish.")],
               install: Annotated[bool, typer.Option("--install",
                                                     help="Write it where the shell looks for it.")] = False) -> None:
    """Print (or --install) the shell completion script; names of profiles, tasks and models
    complete from your own files."""
    if shell not in SHELLS:
        from ..errors import UsageError

        raise UsageError(f"unknown shell {shell!r}: use bash, zsh or fish")
    text = script(shell)
    out = Output()
    if not install:
        out.text(text.rstrip("\n"))
        return
    path = install_path(shell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    out.info(f"wrote {path}")
    if shell == "zsh":
        out.hint(f"add to ~/.zshrc (before compinit): fpath=({path.parent} $fpath); autoload -Uz compinit && compinit")
    elif shell == "bash":
        out.hint("bash-completion loads it in new shells (package bash-completion); or: source " + str(path))


COMMANDS = {"completion": handle_errors(completion)}
