"""The local model store: one directory per model with a manifest.json.

``$LLMCTL_HOME/models/NAME/manifest.json`` records where the model came from and its main
file; profiles name the model by NAME (or by the reference it was pulled with). Pulled models
also record the Hub repo, the quant, the commit they were pinned to, every file with its size
and checksum, and how the files were verified.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import LlmctlError, NotEnoughSpace, StateError, StoreLinkOutside, UsageError
from ..paths import Paths

GGUF_MAGIC = b"GGUF"
#: a model's folder name in the store (see :func:`check_store_name`)
STORE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
MAX_NAME = 64  #: names a user picks (`import --as`)
MAX_STORED_NAME = 255  #: names of models already there (pulled names come from the Hub), NAME_MAX


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
    files: list[dict[str, Any]] = field(default_factory=list)
    #: how the files were checked: sha256 | git-blob-sha1 | sha256+git-blob-sha1 | size; None: imported
    verified: str | None = None

    def write(self, directory: Path) -> None:
        tmp = directory / ".manifest.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, directory / "manifest.json")

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
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


def _real(path: Path) -> Path | None:
    """Where ``path`` really leads (links followed); None for a link loop."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None


def inside(path: Path, base: Path) -> bool:
    """``path``, links followed, is ``base`` itself or lies under it (links followed too)."""
    real, root = _real(path), _real(base)
    return real is not None and root is not None and (real == root or real.is_relative_to(root))


def first_link(path: Path, base: Path) -> Path | None:
    """The first symlink on the way from ``base`` down to ``path`` (``path`` lies under ``base``)."""
    p = base
    for part in path.relative_to(base).parts:
        p = p / part
        if p.is_symlink():
            return p
    return None


def _leads_out(entry: Path, paths: Paths) -> bool:
    """The store entry ``entry`` is a link to somewhere not strictly inside the store."""
    return entry.is_symlink() and (not inside(entry, paths.models) or _real(entry) == _real(paths.models))


def _link_out(entry: Path, paths: Paths) -> StoreLinkOutside:
    try:
        target = os.readlink(entry)
    except OSError:
        target = "?"
    real = _real(entry)
    where = f"{real}, outside the model store {paths.models}" if real is not None else f"{target} (a loop)"
    return StoreLinkOutside(f"{entry} is a link to {where}: llmctl neither reads nor writes a model "
                            f"through it", path=str(entry))


def check_store_name(name: str, *, new: bool = False) -> str:
    """Return ``name`` if it can be a model's folder in the store, else raise UsageError.

    A model name matches ``[a-z0-9][a-z0-9_.-]*`` (so never empty, ``.``, ``..``, a path or an
    absolute path). Names a user picks (``import --as``: ``new``) have at most MAX_NAME
    characters; a pulled model's name comes from its Hub repo and file and may be longer, up to
    what a file system allows (MAX_STORED_NAME)."""
    limit = MAX_NAME if new else MAX_STORED_NAME
    if isinstance(name, str) and 0 < len(name) <= limit and STORE_NAME_RE.fullmatch(name):
        return name
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    raise UsageError(f"{shown} is not a model name: model names match {STORE_NAME_RE.pattern} and have at "
                     f"most {limit} characters (a name is a folder in the store, never a path)")


def is_store_name(name: str) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_STORED_NAME and bool(STORE_NAME_RE.fullmatch(name))


def model_dir(name: str, paths: Paths, *, new: bool = False) -> Path:
    """The store folder of model ``name``, the name checked first; a store entry that is a link
    out of the store raises :class:`StoreLinkOutside`."""
    directory = paths.models / check_store_name(name, new=new)
    if _leads_out(directory, paths):
        raise _link_out(directory, paths)
    return directory


def store_error(exc: OSError, path: Path | str, note: str = "") -> LlmctlError:
    """A file-system error met while writing the store, as the error a user is shown."""
    where = exc.filename or path
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NotEnoughSpace(f"no space left on the disk holding {where}{note}", path=str(where))
    return StateError(f"cannot write {where}: {exc.strerror or exc}{note}", path=str(where))


def list_models(paths: Paths | None = None,
                skipped: list[LlmctlError] | None = None) -> list[tuple[Path, Manifest]]:
    """Every model in the store with its manifest, by name. Entries that are links out of the
    store are left out, with their :class:`StoreLinkOutside` appended to ``skipped``."""
    paths = paths or Paths.from_env()
    try:
        entries = sorted(paths.models.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"cannot read the model store {paths.models}: {exc.strerror or exc}",
                         path=str(paths.models)) from None
    out = []
    for d in entries:
        if d.name.startswith("."):
            continue
        if _leads_out(d, paths):
            if skipped is not None:
                skipped.append(_link_out(d, paths))
            continue
        if d.is_dir():
            m = Manifest.read(d)
            if m is not None:
                out.append((d, m))
    return out


def remove_model(name: str, paths: Paths | None = None) -> tuple[Path, str | None]:
    """Delete a model directory (a linked import loses only its link). A store entry that is
    itself a link loses only the link. Return what was removed and, for a link, its target."""
    from ..errors import ModelNotFound

    paths = paths or Paths.from_env()
    directory = paths.models / check_store_name(name)
    try:
        if directory.is_symlink():
            target = os.readlink(directory)
            directory.unlink()
            return directory, target
        if not directory.is_dir():
            raise ModelNotFound(f"no model named {name!r} in {paths.models}")
        shutil.rmtree(directory)
    except OSError as exc:
        raise store_error(exc, directory) from None
    return directory, None


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
    """Copy (or symlink, with ``link``) a local GGUF file into the store as ``name``.

    The new model is built in a hidden folder beside the old one and swapped in by renames, so
    ``--force`` never deletes a file before its copy is made (even when the source is the
    model's own file), and a failed copy (a full disk) leaves the store as it was."""
    paths = paths or Paths.from_env()
    directory = model_dir(name, paths, new=True)
    src = src.expanduser().resolve()
    if not src.is_file():
        raise ModelError(f"{src} does not exist or is not a file")
    check_gguf(src)
    if (directory / "manifest.json").exists() and not force:
        raise UsageError(f"a model named {name!r} already exists; `llmctl import ... --force` replaces it")
    if link and inside(src, directory):
        raise UsageError(f"{src} is inside the store folder of {name!r}, which --force replaces: a link to it "
                         f"would point at nothing; import it without --link")
    try:
        return _build_and_swap(src, name, directory, link, paths)
    except OSError as exc:
        exc.filename = None  # not the hidden folder the model was being built in: the store
        raise store_error(exc, paths.models, "; the store is as it was") from None


def _build_and_swap(src: Path, name: str, directory: Path, link: bool, paths: Paths) -> Manifest:
    paths.models.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    staging, old = paths.models / f".import-{name}-{tag}", paths.models / f".replaced-{name}-{tag}"
    staging.mkdir()
    moved = False
    try:
        target = staging / src.name
        if link:
            target.symlink_to(src)
        else:
            shutil.copyfile(src, target)
        m = Manifest(name=name, path=src.name, reference=str(src), size=src.stat().st_size,
                     source="import", linked=link, created=time.time())
        m.write(staging)
        if directory.exists() or directory.is_symlink():
            os.rename(directory, old)
            moved = True
        os.rename(staging, directory)
    except BaseException:
        if moved and not directory.exists():
            os.rename(old, directory)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if moved:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    return m
