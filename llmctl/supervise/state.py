"""The per-server state file: written atomically by the keeper, read by everyone else.

A state file that cannot be parsed is never trusted: :func:`read_state` moves it aside
(``NAME.json.corrupt``) and reports nothing, so the caller falls back to what the lock and
the processes say.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import StateError


@dataclass
class ServerState:
    name: str
    state: str = "stopped"
    engine: str = ""
    host: str = ""
    port: int = 0
    url: str = ""
    model: str = ""
    pid: int | None = None  #: the server's pid
    pid_create_time: float | None = None
    keeper_pid: int | None = None
    keeper_create_time: float | None = None
    members: list = field(default_factory=list)  #: [pid, create_time] of the server's descendants
    started_mono: float | None = None  #: CLOCK_MONOTONIC (system-wide) at the last spawn
    ready_mono: float | None = None
    started_wall: float | None = None  #: for display only
    boot_time: float | None = None  #: monotonic values are meaningful only within one boot
    restarts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    health: str | None = None
    message: str = ""
    next_try_wall: float | None = None
    log: str = ""
    stop_timeout: float = 10.0
    updated_wall: float = 0.0

    def keeper_alive(self) -> bool:
        """The keeper that wrote this record is still running (by pid and start time)."""
        from .identity import ProcId

        return bool(self.keeper_pid and self.keeper_create_time and
                    ProcId(self.keeper_pid, self.keeper_create_time).alive())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ServerState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_state(path: Path, st: ServerState) -> None:
    """Write atomically (temp file, fsync, rename); a reader sees the old or the new file."""
    st.updated_wall = time.time()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(st.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StateError(f"cannot write {path}: {exc.strerror or exc}", path=str(path.parent)) from exc


def read_state(path: Path, name: str) -> ServerState | None:
    """The recorded state, or None when there is none or it was unreadable (then moved aside)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("name") != name:
            raise ValueError("not a state record")
        st = ServerState.from_dict(data)
        if not isinstance(st.state, str) or not isinstance(st.restarts, int):
            raise ValueError("bad field types")
        return st
    except (ValueError, TypeError):
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        return None
