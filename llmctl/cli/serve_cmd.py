"""`serve`: the OpenAI-compatible gateway in front of every profile."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the commands of this group to the app."""
