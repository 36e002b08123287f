"""`run` and `tasks` (one-shot inference and task routing)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the commands of this group to the app."""
