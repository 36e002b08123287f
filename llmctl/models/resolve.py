"""Turn a profile's ``model:`` into a file on disk, or say exactly what is missing."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelMissing
from ..paths import Paths
from ..profiles.schema import Profile


def looks_like_path(ref: str) -> bool:
    return "/" in ref and not ref.startswith("hf:") or ref.endswith(".gguf") or ref.startswith(("~", "."))


def store_lookup(ref: str, paths: Paths) -> Path | None:
    """The main file of a model in the local store (imported or pulled), if there."""
    manifest = paths.models / ref / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    path = Path(data.get("path", ""))
    if not path.is_absolute():
        path = manifest.parent / path
    return path if path.exists() else None


def resolve_model(profile: Profile, paths: Paths | None = None) -> Path:
    """The model file (or directory, for vLLM) the profile means; raise :class:`ModelMissing`."""
    ref = profile.model
    paths = paths or Paths.from_env()
    if looks_like_path(ref):
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
    raise ModelMissing(f"profile {profile.name!r}: model {ref!r} is not in the model store "
                       f"{paths.models} ({profile.where('model')})", name=profile.name)
