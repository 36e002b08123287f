"""Where llmctl keeps state, logs and models.

``LLMCTL_HOME`` puts everything under one directory (tests use it); otherwise the XDG base
directories are used: state and logs under ``$XDG_STATE_HOME/llmctl``, models under
``$XDG_DATA_HOME/llmctl/models``, user profiles under ``$XDG_CONFIG_HOME/llmctl/profiles``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .names import check_name


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def _mkdir_private(d: Path) -> None:
    """Make ``d`` and its missing parents mode 0700 (XDG: directories an application creates
    are 0700; ``mkdir(parents=True)`` would make the parents by the umask). Existing ones stay."""
    missing = []
    while not d.exists():
        missing.append(d)
        d = d.parent
    for m in reversed(missing):
        m.mkdir(mode=0o700, exist_ok=True)


@dataclass(frozen=True)
class Paths:
    state: Path  #: one JSON state file per profile
    run: Path  #: locks, launch specs, key files
    logs: Path  #: server logs
    models: Path  #: downloaded and imported models
    config: Path  #: user-level configuration

    @classmethod
    def from_env(cls) -> Paths:
        home = os.environ.get("LLMCTL_HOME")
        if home:
            root = Path(home).expanduser()
            return cls(root / "state", root / "run", root / "logs", root / "models", root / "config")
        state = _xdg("XDG_STATE_HOME", ".local/state") / "llmctl"
        return cls(
            state / "state",
            state / "run",
            state / "logs",
            _xdg("XDG_DATA_HOME", ".local/share") / "llmctl" / "models",
            _xdg("XDG_CONFIG_HOME", ".config") / "llmctl",
        )

    def ensure(self) -> Paths:
        """Create the private directories (mode 0700, tightened if they exist looser)."""
        for d in (self.state, self.run, self.logs):
            _mkdir_private(d)
            if d.stat().st_mode & 0o077:
                os.chmod(d, 0o700)
        return self

    # a profile's files: the name is checked (never a path, `..` or empty), see llmctl.names
    def state_file(self, name: str) -> Path:
        return self.state / f"{check_name(name)}.json"

    def lock_file(self, name: str) -> Path:
        return self.run / f"{check_name(name)}.lock"

    def spec_file(self, name: str) -> Path:
        return self.run / f"{check_name(name)}.spec.json"

    def key_file(self, name: str) -> Path:
        return self.run / f"{check_name(name)}.key"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{check_name(name)}.log"

