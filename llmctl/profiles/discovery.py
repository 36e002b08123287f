"""Which profile files to read, in the documented search order.

The files named by ``-f/--file``, else ``LLMCTL_PROFILES`` (files or directories,
``os.pathsep``-separated), else ``./llmctl.yaml`` and ``./profiles/*.yaml``, else
``$XDG_CONFIG_HOME/llmctl/profiles/*.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path


def discover(files: list[str] | None = None, cwd: Path | None = None) -> list[Path]:
    """The profile files to read, in the documented search order."""
    cwd = cwd or Path.cwd()
    if files:
        return _expand(files, cwd)
    env = os.environ.get("LLMCTL_PROFILES")
    if env:
        return _expand([p for p in env.split(os.pathsep) if p], cwd)
    local = []
    if (cwd / "llmctl.yaml").is_file():
        local.append(cwd / "llmctl.yaml")
    local += sorted((cwd / "profiles").glob("*.yaml")) if (cwd / "profiles").is_dir() else []
    if local:
        return local
    from ..paths import Paths

    user = Paths.from_env().config / "profiles"
    return sorted(user.glob("*.yaml")) if user.is_dir() else []


def _expand(items: list[str], cwd: Path) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = (cwd / Path(item).expanduser()).resolve() if not Path(item).is_absolute() else Path(item)
        if p.is_dir():
            out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
        else:
            out.append(p)  # a missing file is reported by parse_file
    return out
