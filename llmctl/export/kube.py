"""Names, labels and metadata shared by the Kubernetes objects of an export."""

from __future__ import annotations

import re
from typing import Any

from ..errors import UsageError
from ..profiles.schema import Profile
from .common import Options
from .yamlout import Note

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")


def object_name(profile_name: str) -> str:
    """``llmctl-NAME`` in the spelling Kubernetes allows (``_`` becomes ``-``)."""
    return "llmctl-" + profile_name.replace("_", "-").strip("-")


def check_names(profiles: list[Profile]) -> dict[str, str]:
    """profile name -> object name; refuse two profiles that would share one, or one too long."""
    seen: dict[str, str] = {}
    for p in profiles:
        name = object_name(p.name)
        if len(name) > 63 - len("-models") or not _DNS_LABEL.match(name):
            raise UsageError(f"profile {p.name!r} gives the Kubernetes name {name!r}, which is too long or not a "
                             "DNS label: export it under a shorter name")
        if name in seen.values():
            other = next(k for k, v in seen.items() if v == name)
            raise UsageError(f"profiles {other!r} and {p.name!r} both become {name!r} in Kubernetes: rename one")
        seen[p.name] = name
    return seen


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "llmctl",
            "app.kubernetes.io/managed-by": "llmctl-export"}


def metadata(name: str, component: str, opts: Options) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if opts.namespace:
        meta["namespace"] = Note(opts.namespace, "--namespace")
    meta["labels"] = labels(name, component)
    return meta
