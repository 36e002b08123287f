"""The catalog of model aliases: ``catalog.yaml`` in this package, plus the user's own.

A user catalog at ``$LLMCTL_HOME/config/catalog.yaml`` (without LLMCTL_HOME:
``$XDG_CONFIG_HOME/llmctl/catalog.yaml``) has the same format; its entries add to the built-in
ones and replace those of the same alias::

    my-model: {repo: me/My-Model-GGUF, quant: Q4_K_M, description: "..."}
    my-vllm:  {repo: me/My-Model-AWQ, engine: vllm}       # no quant: the whole repo
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import Paths
from .store import ModelError

_KEYS = {"repo", "quant", "engine", "description"}


@dataclass(frozen=True)
class CatalogEntry:
    alias: str
    repo: str  #: ORG/REPO on the Hub
    quant: str | None  #: default quantization of a GGUF repo; None: the whole repo
    engine: str = "llama-server"  #: the engine the files are for
    description: str = ""
    source: str = "built-in"  #: the file that defined it


class Catalog(dict[str, CatalogEntry]):
    """alias (lower case) -> :class:`CatalogEntry`."""

    def get(self, alias: str, default: Any = None) -> Any:
        return super().get(alias.lower(), default)


def builtin_text() -> str:
    from importlib.resources import files

    return (files("llmctl.models") / "catalog.yaml").read_text(encoding="utf-8")


def user_catalog_path(paths: Paths | None = None) -> Path:
    return (paths or Paths.from_env()).config / "catalog.yaml"


def _entries(text: str, source: str) -> dict[str, CatalogEntry]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"catalog {source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"catalog {source}: expected a mapping of alias -> {{repo, quant, ...}}")
    out: dict[str, CatalogEntry] = {}
    for alias, spec in data.items():
        alias = str(alias).lower()
        if not isinstance(spec, dict) or not isinstance(spec.get("repo"), str) or "/" not in spec["repo"]:
            raise ModelError(f"catalog {source}: entry {alias!r} needs `repo: ORG/REPO`")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ModelError(f"catalog {source}: entry {alias!r}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(allowed: {', '.join(sorted(_KEYS))})")
        quant = spec.get("quant")
        out[alias] = CatalogEntry(alias, spec["repo"], str(quant).upper() if quant else None,
                                  str(spec.get("engine") or "llama-server"), str(spec.get("description") or ""),
                                  source)
    return out


def load_catalog(paths: Paths | None = None) -> Catalog:
    """The built-in catalog with the user's catalog file (if any) laid over it."""
    cat = Catalog(_entries(builtin_text(), "built-in"))
    user = user_catalog_path(paths)
    if user.is_file():
        try:
            text = user.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"cannot read catalog {user}: {exc.strerror or exc}") from None
        cat.update(_entries(text, str(user)))
    return cat
