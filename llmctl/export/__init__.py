"""`llmctl export`: the same profiles and tasks as files for the tools that run servers beyond one
machine: Kubernetes (:mod:`.k8s`), SkyPilot (:mod:`.skypilot`), Compose (:mod:`.compose`) and
systemd (:mod:`.systemd`).

Every target builds the server's command with the engine's own builder (the one `llmctl up`
uses), writes comments that say where each value came from, and gives the same bytes for the
same profiles (and the same model store: a model this machine has is named by its file).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

from ..errors import StateError, UsageError
from ..paths import Paths
from ..profiles.schema import Config
from .common import ExportFile, Options

__all__ = ["TARGETS", "ExportFile", "Options", "export", "write"]

#: target -> the module whose ``render(config, names, options, paths)`` makes its files
TARGETS = {"k8s": "k8s", "skypilot": "skypilot", "compose": "compose", "systemd": "systemd"}

Render = Callable[[Config, "list[str] | None", Options, Paths], "list[ExportFile]"]


def export(target: str, config: Config, names: list[str] | None = None, options: Options | None = None,
           paths: Paths | None = None) -> list[ExportFile]:
    """The files of ``target`` for the named profiles (all by default); nothing is written."""
    if target not in TARGETS:
        raise UsageError(f"no export target {target!r}: use one of {', '.join(TARGETS)}")
    render: Render = importlib.import_module(f"{__name__}.{TARGETS[target]}").render
    return render(config, names, options or Options(), paths or Paths.from_env())


def write(files: list[ExportFile], directory: Path) -> list[Path]:
    """Write the files into ``directory`` (made if missing), each replaced whole (a temporary
    file renamed over it); the paths written."""
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for f in files:
            path = directory / f.name
            tmp = directory / f".{f.name}.tmp"
            tmp.write_text(f.text)
            os.replace(tmp, path)
            written.append(path)
    except OSError as exc:
        raise StateError(f"cannot write the export to {directory}: {exc.strerror or exc}",
                         path=str(directory)) from None
    return written
