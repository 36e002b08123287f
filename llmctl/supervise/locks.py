"""Kernel locks (flock): held by a keeper for its whole life, so "keeper alive" can never be
faked by a leftover file, and two `up` of one profile cannot both start a server."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """Open and lock ``path`` exclusively without waiting; the fd, or None if held elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_held(path: Path) -> bool:
    """True while some process (a keeper) holds the lock. Checked with a shared lock, so that
    two checkers at once never take each other for a keeper (keepers hold it exclusively)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
