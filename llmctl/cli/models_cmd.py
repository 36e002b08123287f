"""`import` (and, later, `pull` and `models`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..output import Output
from .common import JsonOpt, handle_errors


def import_(path: Annotated[Path, typer.Argument(help="A local .gguf file.")],
            as_: Annotated[str, typer.Option("--as", help="Name profiles will use for it.")],
            link: Annotated[bool, typer.Option("--link", help="Symlink instead of copying.")] = False,
            force: Annotated[bool, typer.Option("--force", help="Replace a model of that name.")] = False,
            json: JsonOpt = False) -> None:
    """Bring a local GGUF file into the model store under NAME."""
    from ..models.store import import_model

    m = import_model(path, as_, link=link, force=force)
    out = Output(json)
    if json:
        out.data(m.__dict__)
    else:
        out.text(f"{m.name}: {'linked' if m.linked else 'copied'} {m.reference} ({m.size / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    app.command("import")(handle_errors(import_))
