"""The local model store: one directory per model with a manifest.json.

``$LLMCTL_HOME/models/NAME/manifest.json`` records where the model came from and its main
file; profiles name the model by NAME (or by the reference it was pulled with). Pulled models
also record the Hub repo, the quant, the commit they were pinned to, every file with its size
and checksum, and how the files were verified.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import LlmctlError, UsageError
from ..paths import Paths
from ..profiles.schema import NAME_RE

GGUF_MAGIC = b"GGUF"


class ModelError(LlmctlError):
    """A model file is not what it claims to be."""


@dataclass
class Manifest:
    name: str
    path: str  #: main file, relative to the model directory or absolute (linked imports)
    reference: str  #: where it came from (a path for imports)
    size: int
    source: str  #: import | pull
    linked: bool = False
    created: float = 0.0
    repo: str | None = None  #: ORG/REPO on the Hub (pulled models)
    quant: str | None = None  #: quantization of the GGUF file(s), if known
    revision: str | None = None  #: the commit the pull was pinned to
    endpoint: str | None = None  #: the Hub (or mirror) it came from
    #: one dict per file: path, size, sha256 / blob_id (as the Hub gave them), verified (how)
    files: list = field(default_factory=list)
    #: how the files were checked: sha256 | git-blob-sha1 | sha256+git-blob-sha1 | size; None: imported
    verified: str | None = None

    def write(self, directory: Path) -> None:
        tmp = directory / ".manifest.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, directory / "manifest.json")

    @classmethod
    def read(cls, directory: Path) -> "Manifest | None":
        """The manifest of a model directory; None if missing or unreadable."""
        try:
            data = json.loads((directory / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None

    def main_path(self, directory: Path) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else directory / p


def list_models(paths: Paths | None = None) -> list[tuple[Path, Manifest]]:
    """Every model in the store with its manifest, by name."""
    paths = paths or Paths.from_env()
    if not paths.models.is_dir():
        return []
    out = []
    for d in sorted(paths.models.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            m = Manifest.read(d)
            if m is not None:
                out.append((d, m))
    return out


def remove_model(name: str, paths: Paths | None = None) -> Path:
    """Delete a model directory (a linked import loses only its link); return what was removed."""
    from ..errors import ModelNotFound

    paths = paths or Paths.from_env()
    directory = paths.models / name
    if "/" in name or name.startswith(".") or not directory.is_dir():
        raise ModelNotFound(f"no model named {name!r} in {paths.models}")
    shutil.rmtree(directory)
    return directory


def check_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")


def import_model(src: Path, name: str, *, link: bool = False, paths: Paths | None = None,
                 force: bool = False) -> Manifest:
    """Copy (or symlink, with ``link``) a local GGUF file into the store as ``name``."""
    paths = paths or Paths.from_env()
    if not NAME_RE.match(name.replace(".", "-")) or "/" in name:
        raise UsageError(f"model name {name!r} must match [a-z0-9][a-z0-9_.-]*")
    src = src.expanduser().resolve()
    if not src.is_file():
        raise ModelError(f"{src} does not exist or is not a file")
    check_gguf(src)
    directory = paths.models / name
    if (directory / "manifest.json").exists() and not force:
        raise UsageError(f"a model named {name!r} already exists; `llmctl import ... --force` replaces it")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / src.name
    if target.exists() or target.is_symlink():
        target.unlink()
    if link:
        target.symlink_to(src)
    else:
        tmp = directory / (src.name + ".partial")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    m = Manifest(name=name, path=src.name, reference=str(src), size=src.stat().st_size,
                 source="import", linked=link, created=time.time())
    m.write(directory)
    return m
