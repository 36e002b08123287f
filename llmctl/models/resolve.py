"""Turn a profile's ``model:`` into a file on disk, or say exactly what is missing.

In order: a path (relative to the profile's file); the name of a model in the store (imported
or pulled); a catalog alias or an ``hf:`` reference, found in the store under its store name
(see :mod:`llmctl.models.refs`). Nothing here touches the network: a reference that was not
pulled yet raises :class:`ModelMissing` saying "run `llmctl pull X`"
(:func:`llmctl.models.pull.ensure_model` pulls it instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelMissing
from ..paths import Paths
from ..profiles.schema import Profile
from .store import Manifest, is_store_name, model_dir

if TYPE_CHECKING:
    from .refs import ModelRef


def store_lookup(ref: str, paths: Paths) -> Path | None:
    """The main file (or directory) of a model in the local store (imported or pulled), if there.
    A store entry of that name that is a link out of the store raises StoreLinkOutside."""
    if not is_store_name(ref):
        return None
    directory = model_dir(ref, paths)
    m = Manifest.read(directory)
    if m is None:
        return None
    path = m.main_path(directory)
    return path if path.exists() else None


def _parsed(ref: str, paths: Paths) -> ModelRef:
    from .catalog import load_catalog
    from .refs import parse_ref

    return parse_ref(ref, load_catalog(paths))


def pullable(ref: str, paths: Paths | None = None) -> bool:
    """``ref`` is a catalog alias or an ``hf:`` reference (something `llmctl pull` can fetch)."""
    try:
        return _parsed(ref, paths or Paths.from_env()).kind in ("alias", "hf")
    except Exception:  # noqa: BLE001 - a malformed reference is simply not pullable
        return False


def resolve_model(profile: Profile, paths: Paths | None = None) -> Path:
    """The model file (or directory, for vLLM) the profile means; raise :class:`ModelMissing`."""
    ref = profile.model
    paths = paths or Paths.from_env()
    parsed = _parsed(ref, paths)
    if parsed.kind == "path":
        p = Path(ref).expanduser()
        if not p.is_absolute():
            p = profile.base_dir / p
        if p.exists():
            return p
        raise ModelMissing(f"profile {profile.name!r}: model file {p} does not exist "
                           f"({profile.where('model')})", name=profile.name)
    found = store_lookup(ref, paths)
    if found:
        return found
    if parsed.kind in ("alias", "hf"):
        found = store_lookup(parsed.store_name, paths)
        if found:
            return found
        raise ModelMissing(f"profile {profile.name!r}: model {ref!r} has not been pulled yet "
                           f"({profile.where('model')}): run `llmctl pull {ref}`",
                           name=profile.name, ref=ref)
    raise ModelMissing(f"profile {profile.name!r}: model {ref!r} is not in the model store "
                       f"{paths.models} nor a catalog alias ({profile.where('model')})", name=profile.name)
