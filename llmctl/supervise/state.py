"""The per-server state file: written atomically by the keeper, read by everyone else.

A state file that cannot be parsed, or has a field of the wrong type or out of range (a string
pid, NaN, 1e400, bytes that are not UTF-8), is never trusted: :func:`read_state` moves it aside
(``NAME.json.corrupt``) and reports nothing, so the caller falls back to what the lock and the
processes say. A record written in another boot (its ``boot_id`` differs) names processes that
are gone, whatever now has their numbers: it is read with every process identity dropped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from ..errors import StateError
from .states import State

if TYPE_CHECKING:
    from .identity import ProcId

MAX_STATE_BYTES = 1 << 20  #: a state file is a few hundred bytes; anything this big is not one
STATES = tuple(s.value for s in State)


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
    pid_create_time: float | None = None  #: wall clock: display, and records without pid_start
    pid_start: int | None = None  #: clock ticks since boot (/proc/PID/stat field 22)
    keeper_pid: int | None = None
    keeper_create_time: float | None = None
    keeper_start: int | None = None
    members: list[list[Any]] = field(default_factory=list)  #: [pid, create_time, start] of the server's descendants
    boot_id: str | None = None  #: the boot this record was written in; None in older records
    started_mono: float | None = None  #: CLOCK_MONOTONIC (system-wide) at the last spawn
    ready_mono: float | None = None
    started_wall: float | None = None  #: for display only
    boot_time: float | None = None  #: monotonic values are meaningful only within one boot
    restarts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    health: str | None = None
    message: str = ""  #: why it is in its state, in words
    reason: str = ""  #: the kind of that reason (llmctl.supervise.states.Why), for code to branch on
    next_try_wall: float | None = None
    log: str = ""
    stop_timeout: float = 10.0
    updated_wall: float = 0.0

    def keeper_alive(self) -> bool:
        """The keeper that wrote this record is still running (by pid and start time)."""
        keeper = self.keeper_id()
        return bool(keeper and keeper.alive())

    def server_id(self) -> ProcId | None:
        """The recorded server's identity (a ProcId), or None."""
        return self._ident(self.pid, self.pid_create_time, self.pid_start)

    def keeper_id(self) -> ProcId | None:
        return self._ident(self.keeper_pid, self.keeper_create_time, self.keeper_start)

    def member_ids(self) -> list[ProcId]:
        from .identity import ProcId

        return [m for m in (ProcId.from_list(x, self.boot_id) for x in self.members) if m]

    def _ident(self, pid: int | None, create_time: float | None, start: int | None) -> ProcId | None:
        from .identity import ProcId

        if not (pid and create_time):
            return None
        return ProcId(pid, create_time, start, self.boot_id if start is not None else None)

    def forget_processes(self, why: str) -> None:
        """Drop every process identity (the record is from another boot: they are all gone)."""
        self.pid = self.pid_create_time = self.pid_start = None
        self.keeper_pid = self.keeper_create_time = self.keeper_start = None
        self.members, self.started_mono, self.ready_mono, self.health = [], None, None, None
        if self.state != "stopped":
            self.state, self.message = "stopped", why

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_state(path: Path, st: ServerState) -> None:
    """Write atomically (a new 0600 file, fsync, rename); a reader sees the old or the new file."""
    from .files import replace_private

    st.updated_wall = time.time()
    try:
        replace_private(path, [st.to_json().encode()])
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}", path=str(path.parent)) from exc


def read_state(path: Path, name: str) -> ServerState | None:
    """The recorded state, or None when there is none or it was unreadable (then moved aside).
    A record from another boot comes back with its processes forgotten."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except OSError:  # missing, or unreadable: nothing to trust
        return None
    try:
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError("too large for a state record")
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        if not isinstance(data, dict) or data.get("name") != name:
            raise ValueError("not a state record")
        check_fields(data)
        st = ServerState.from_dict(data)
    except (ValueError, TypeError, RecursionError):
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        return None
    from .identity import boot_id

    if st.boot_id is not None and st.boot_id != boot_id():
        st.forget_processes("stopped by a reboot (recorded in an earlier boot)")
    return st


def _no_constant(word: str) -> NoReturn:
    raise ValueError(f"{word} is not a number a state record holds")


def _int(lo: int, hi: int) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _num(lo: float = -math.inf, hi: float = math.inf) -> Callable[[object], bool]:
    return lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      and lo <= v <= hi)


def _str(v: object) -> bool:
    return isinstance(v, str)


def _member(v: object) -> bool:
    from .identity import ProcId

    return ProcId.from_list(v) is not None


PID, TICKS, CODE = _int(1, 2**31 - 1), _int(0, 2**62), _int(-(2**31), 2**31 - 1)
#: every field: (check, may be null)
FIELD_CHECKS = {
    "name": (_str, False), "state": (lambda v: v in STATES, False), "engine": (_str, False),
    "host": (_str, False), "port": (_int(0, 65535), False), "url": (_str, False), "model": (_str, False),
    "pid": (PID, True), "pid_create_time": (_num(0), True), "pid_start": (TICKS, True),
    "keeper_pid": (PID, True), "keeper_create_time": (_num(0), True), "keeper_start": (TICKS, True),
    "members": (lambda v: isinstance(v, list) and all(_member(m) for m in v), False),
    "boot_id": (_str, True), "started_mono": (_num(), True), "ready_mono": (_num(), True),
    "started_wall": (_num(), True), "boot_time": (_num(), True), "restarts": (_int(0, 2**31), False),
    "exit_code": (CODE, True), "exit_signal": (_int(0, 1024), True), "health": (_str, True),
    "message": (_str, False), "reason": (_str, False), "next_try_wall": (_num(), True), "log": (_str, False),
    "stop_timeout": (_num(0), False), "updated_wall": (_num(), False),
}


def check_fields(data: dict[str, Any]) -> None:
    """Raise ValueError naming the first field of the wrong type or out of range."""
    for key, value in data.items():
        check, nullable = FIELD_CHECKS.get(key, (None, True))
        if check is None or (value is None and nullable):
            continue
        if not check(value):
            raise ValueError(f"state field {key!r} holds {value!r:.40}")
