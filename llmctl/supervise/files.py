"""Writing the files of a server (its log, its API key file, state and spec) without ever
writing through a link planted in their place.

- The API key file is always a new file: a stale one of ours is removed first; it is created
  with ``O_EXCL | O_NOFOLLOW`` and its mode forced to 0600 with ``fchmod``. A symbolic link, or
  anything that is not a regular file of ours, is refused and left alone.
- The log is opened with ``O_NOFOLLOW``. A link to a character device (``/dev/null`` to drop
  the log, ``/dev/full``) is the one link followed: nothing there can be truncated or read
  back. A regular file must be ours; its mode is forced to 0600.
- Log rotation never goes through the path: the size is the keeper's own descriptor's, the copy
  is written to a new file renamed into place, and the live file is truncated through that
  descriptor (the server keeps appending to it).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import StateError, UnsafeFile

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _refuse(path: Path | str, what: str) -> UnsafeFile:
    return UnsafeFile(f"{path} is {what}; llmctl does not write through it", path=str(path))


def _describe(st: os.stat_result) -> str | None:
    """Why a file of this kind cannot be one of ours (None: it can)."""
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.getuid():
        return f"owned by another user (uid {st.st_uid})"
    return None


def create_private(path: Path | str) -> int:
    """A new file at ``path``, ours alone (0600), open for writing. A stale regular file of ours
    is removed first; a link or a stranger's file raises :class:`UnsafeFile` and stays."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        why = _describe(st)
        if why:
            raise _refuse(path, why)
        os.unlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600)
    except FileExistsError:  # planted between the removal and the open
        raise _refuse(path, "a file that appeared while llmctl replaced it") from None
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_new_private(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` as a new file of ours alone (see :func:`create_private`)."""
    fd = create_private(path)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_private(path: Path, chunks: Iterable[bytes]) -> None:
    """Atomically replace ``path`` with the bytes of ``chunks`` (a new 0600 file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = create_private(tmp)
    try:
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()  # ours: created above
        except OSError:
            pass
        raise


def open_log(path: Path | str, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """Open (creating it 0600) a server's log without following a link to a file."""
    try:
        fd = os.open(path, flags | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        fd = os.open(path, flags | CLOEXEC)  # a link: kept only if it leads to a device
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            os.close(fd)
            raise _refuse(path, "a symbolic link to a file") from None
        return fd
    st = os.fstat(fd)
    why = _describe(st) if not stat.S_ISCHR(st.st_mode) else None
    if why:
        os.close(fd)
        raise _refuse(path, why)
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def check_log(path: Path | str) -> None:
    """Raise :class:`UnsafeFile` (or :class:`StateError`: a read-only or full disk) now, before
    anything is started, if ``path`` cannot be our log. Non-blocking: a FIFO there is refused
    rather than waited on."""
    try:
        os.close(open_log(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
    except UnsafeFile:
        raise
    except OSError as exc:
        raise StateError(f"cannot open the log {path}: {exc.strerror or exc}", path=str(Path(path).parent)) from None


def rotate_log(fd: int, path: Path, backups: int) -> None:
    """Copy-and-truncate through ``fd`` (the keeper's read-write descriptor of the live log):
    backups shift by rename, the copy is a new file renamed to ``PATH.1``, then ``fd`` is
    truncated. The path itself is never opened, so a link put there later changes nothing."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if os.path.lexists(older):
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))  # renames a link itself
    replace_private(path.with_name(path.name + ".1"), _chunks(fd, os.fstat(fd).st_size))
    os.ftruncate(fd, 0)


def _chunks(fd: int, end: int, size: int = 1 << 20) -> Iterator[bytes]:
    offset = 0
    while offset < end:
        chunk = os.pread(fd, min(size, end - offset), offset)
        if not chunk:
            return
        yield chunk
        offset += len(chunk)
