"""Finding a profile's keeper and waiting on its lock: what both the start and the stop
protocols (:mod:`.starting`, :mod:`.stopping`) need."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .locks import is_held, try_lock
from .state import ServerState, read_state

if TYPE_CHECKING:
    import psutil


def lock_or_none(lock: Path, st_path: Path | None = None, wait: float = 0.3) -> int | None:
    """The profile's lock, or None while a keeper holds it. A `status` checking the lock holds
    it (shared) for microseconds, longer if it is preempted on a busy machine, and must not pass
    for a keeper: retried 5 ms apart, up to 0.3 s unless the state names a live keeper."""
    fd = try_lock(lock)
    deadline = time.monotonic() + wait
    tries = 0
    while fd is None and time.monotonic() < deadline:
        tries += 1
        if tries == 3 and st_path is not None:
            st = read_state(st_path, lock.stem)
            if st and st.keeper_alive():
                break  # a keeper runs it: no need to wait out the checkers
        time.sleep(0.005)
        fd = try_lock(lock)
    return fd


def wait_released(lock: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_held(lock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def keeper_of(st: ServerState | None, lock: Path) -> psutil.Process | None:
    """The keeper process, by recorded identity, else the keeper process that holds our lock
    file open (compared by device and inode: the paths may differ through symlinks). Keepers
    forked by one `up` share a command line; each keeps only its own lock."""
    import psutil

    recorded = st.keeper_id() if st else None
    if recorded is not None:
        proc = recorded.process()
        if proc is not None:
            return proc
    try:
        want = os.stat(lock)
    except OSError:
        return None
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "uids", "ppid"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "llmctl.supervise.keeper" not in cmd or proc.info["uids"].real != os.getuid():
                continue
            locks = [f.path for f in proc.open_files() if f.path.endswith(".lock")]
            # the keeper holds its own lock only; the launcher that forks the keepers of one
            # `up` holds all of theirs for a moment, and is not the keeper
            if len(locks) == 1 and same_file(locks[0], want):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    # a launcher of one profile also holds just that lock until it returns: its child is the keeper
    parents = {p.info["ppid"] for p in found}
    return next((p for p in found if p.pid not in parents), None)


def in_session(session: int, argv: list[str]) -> list[psutil.Process]:
    """Our processes in ``session`` (the one an `up` started its keepers in) that run ``argv``,
    with their descendants: a server whose keeper died before it could record the server."""
    import psutil

    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            if proc.info["cmdline"] == argv and proc.info["uids"].real == os.getuid() \
                    and os.getsid(proc.pid) == session:
                found += [proc, *proc.children(recursive=True)]
        except (OSError, psutil.Error, TypeError):
            continue
    return found


def same_file(path: str, st: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)
