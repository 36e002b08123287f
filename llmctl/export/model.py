"""Where a profile's model lies inside a container, and where it comes from.

Inside, ``/var/lib/llmctl`` is an llmctl home: ``models/STORE/`` is the store entry `llmctl pull`
writes (a Kubernetes volume the init container fills; on Compose and SkyPilot, this machine's
store entry mounted there), and ``model/`` holds a model given as a path (``mmproj/`` a
projector). The file of a model in this machine's store is known (its manifest), and so is a
whole repo (vLLM). A quant of a repo that was not pulled here is chosen by `llmctl pull`
when it runs: the server's command then reads the file from the store entry's manifest at start
(:data:`MODEL_MARK` in its argv, replaced by the wrapper of :mod:`.command`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LlmctlError
from ..models.catalog import load_catalog
from ..models.refs import parse_ref
from ..models.resolve import resolve_model
from ..models.store import Manifest, is_store_name
from ..paths import Paths
from ..profiles.schema import Profile
from .common import ROOT, said

#: the model's place in an argv when only `llmctl pull` knows the file (replaced at start)
MODEL_MARK = "@MODEL@"


@dataclass(frozen=True)
class Placement:
    """Where the server finds its model."""

    inside: str  #: the path the server is given, or MODEL_MARK (read from the manifest at start)
    inside_dir: str  #: the directory holding it inside (a volume or a mount)
    host_dir: str  #: the directory on this machine to mount there (Compose, SkyPilot)
    pull: str | None  #: the reference an init container pulls (catalog alias, hf:), else None
    revision: str | None  #: the commit this machine pulled (the init container pins it)
    size: int | None  #: bytes, when this machine has it
    note: str  #: for the comment: where the model comes from
    here: bool  #: this machine has the model (a mount finds it)

    @property
    def mount_note(self) -> str:
        """The comment beside a mount of ``host_dir`` (Compose, SkyPilot)."""
        if self.here:
            return self.note
        how = f"`llmctl pull {self.pull}`" if self.pull else "`llmctl import FILE --as NAME`"
        return f"{self.note}; {how} on this machine first: the mount is made from here"


def placement(profile: Profile, paths: Paths) -> Placement:
    """Where ``profile``'s model is, inside and on this machine (nothing is read from the network)."""
    ref = parse_ref(profile.model, load_catalog(paths))
    if ref.kind == "path":
        return _from_path(profile)
    pull = ref.canonical if ref.kind in ("alias", "hf") else None
    store = _store_entry(profile.model, ref.store_name, paths)
    host = paths.models / store
    inside_dir = f"{ROOT}/models/{store}"
    found = _local(profile, paths)
    if found is not None:
        inside, host_dir = _inside(found, host, inside_dir)
        manifest = _manifest(host)
        return Placement(inside, inside_dir, host_dir, pull, manifest.revision if manifest else None,
                         _size(found), f"{said(profile, 'model')}, in this machine's model store as {store}",
                         True)
    whole_repo = pull is not None and ref.quant is None and ref.file is None
    inside = inside_dir if whole_repo else MODEL_MARK
    note = f"{said(profile, 'model')}, not in this machine's model store"
    if pull is None:
        note += f": copy its store entry {store} (manifest.json included) to {inside_dir}"
    elif inside == MODEL_MARK:
        note += f": `llmctl pull {pull}` chooses the file, read from its manifest at start"
    return Placement(inside, inside_dir, str(host), pull, None, None, note, False)


def _from_path(profile: Profile) -> Placement:
    """A model given as a path (relative to its profile's file)."""
    p = Path(profile.model).expanduser()
    if not p.is_absolute():
        p = profile.base_dir / p
    inside_dir = f"{ROOT}/model"
    return Placement(f"{inside_dir}/{p.name}", inside_dir, str(p.parent), None, None,
                     _size(p) if p.exists() else None, f"{said(profile, 'model')}, a file", p.exists())


def _store_entry(text: str, store_name: str, paths: Paths) -> str:
    """The store entry the profile means: its own text when that names a model in the store,
    else the store name of the reference."""
    if is_store_name(text) and (paths.models / text / "manifest.json").exists():
        return text
    return store_name if is_store_name(store_name) else text


def _local(profile: Profile, paths: Paths) -> Path | None:
    try:
        return resolve_model(profile, paths)
    except LlmctlError:
        return None


def _inside(found: Path, host: Path, inside_dir: str) -> tuple[str, str]:
    """(path inside, directory to mount) for a model found at ``found`` whose store entry is
    ``host``: a file of the entry keeps its place in it; a linked import's target (a link in the
    entry would point nowhere inside) is mounted from its own directory."""
    real = found.resolve()
    try:
        rel = real.relative_to(host.resolve())
    except ValueError:
        return f"{inside_dir}/{real.name}", str(real.parent)
    return (f"{inside_dir}/{rel.as_posix()}" if str(rel) != "." else inside_dir), str(host)


def _manifest(host: Path) -> Manifest | None:
    return Manifest.read(host)


def _size(path: Path) -> int | None:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return None
