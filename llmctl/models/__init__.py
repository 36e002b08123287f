"""Models: references and the catalog of aliases, pulling from the Hub, the local store,
resolving a profile's ``model:`` to files, GGUF header facts.

``pull.pull(ref)`` and ``pull.ensure_model(profile, paths, progress=...)`` live in
:mod:`.pull`, ``resolve_model(profile, paths)`` in :mod:`.resolve`; ``ensure_model`` and
``resolve_model`` are importable from here too (lazily).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ensure_model", "resolve_model"]


def __getattr__(name: str) -> Any:
    if name == "ensure_model":
        from .pull import ensure_model

        return ensure_model
    if name == "resolve_model":
        from .resolve import resolve_model

        return resolve_model
    raise AttributeError(name)
