"""What the root options (`-f/--file`) set for the command that runs, and loading the profiles
they name. Imports nothing of the CLI, so the app, the commands and the completers can share it
without importing each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..profiles.schema import Config


class State:
    """What the app callback collects for every command."""

    files: list[str] | None = None


STATE = State()


def load_config() -> Config:
    """Load the profiles from -f/LLMCTL_PROFILES/./llmctl.yaml/./profiles/XDG."""
    from ..profiles import load

    return load(STATE.files)
