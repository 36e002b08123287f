"""Kernel locks (flock): held by a keeper for its whole life, so "keeper alive" can never be
faked by a leftover file, and two `up` of one profile cannot both start a server."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def try_lock(path: Path) -> int | None:
    """Open and lock ``path`` exclusively without waiting; the fd, or None if held elsewhere.
    A link planted in its place is refused, never followed (O_CREAT would create its target)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        from ..errors import UnsafeFile

        raise UnsafeFile(f"{path} is a symbolic link; llmctl does not lock through it", path=str(path)) from None
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
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link: no keeper locks through one (see try_lock)
            return False
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
