"""A server's log, streamed to the dashboard as server-sent events (``GET /ui/api/logs/NAME``):
first the end of the file the keeper writes (at most ``kb`` KiB, from a line start), then what is
appended, read every :data:`POLL` seconds. A rotated or truncated file is read again from its
start. Each event is a ``data:`` block holding a piece of the log (whole lines)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Callable

POLL = 0.25  #: seconds between looks at the file
DEFAULT_KB = 64  #: how much of the end is sent first
MAX_KB = 1024  #: the most a client may ask for first
KEEPALIVE = 15.0  #: seconds of silence after which a comment line is sent (finds a client gone)


def sse(text: str) -> bytes:
    """``text`` as one event (each line its own ``data:`` line)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(f"data: {line}\n" for line in text.split("\n")).encode() + b"\n"


def read_tail(path: Path, kb: int) -> tuple[str, int, int]:
    """The last ``kb`` KiB of ``path`` in whole lines, the offset read to and the file's inode."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            start = max(0, st.st_size - kb * 1024)
            f.seek(start)
            data = f.read(st.st_size - start)
    except FileNotFoundError:
        return "", 0, 0
    skip = data.find(b"\n") + 1 if start > 0 else 0  # a line cut by the window is left out
    end = data.rfind(b"\n") + 1  # a line still being written waits for its end
    if end <= skip:
        return "", start + skip, st.st_ino
    return data[skip:end].decode(errors="replace"), start + end, st.st_ino


def read_more(path: Path, offset: int, inode: int) -> tuple[str, int, int]:
    """What was appended since ``offset`` (whole lines only); from the start when the file was
    replaced (rotation) or truncated."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_ino != inode or st.st_size < offset:
                offset, inode = 0, st.st_ino
            f.seek(offset)
            data = f.read(min(st.st_size - offset, MAX_KB * 1024))
    except FileNotFoundError:
        return "", 0, 0
    end = data.rfind(b"\n")
    data = data[:end + 1] if end >= 0 else b""
    return data.decode(errors="replace"), offset + len(data), inode


async def follow(path: Path, kb: int, stopping: Callable[[], bool] = lambda: False) -> AsyncIterator[bytes]:
    """The log's end, then its growth, as events; runs until the client goes away or
    ``stopping()`` says the gateway is shutting down (which waits for open answers to end)."""
    loop = asyncio.get_running_loop()
    text, offset, inode = await loop.run_in_executor(None, read_tail, path, kb)
    yield sse(text) if text else b": start\n\n"
    quiet = 0.0
    while not stopping():
        await asyncio.sleep(POLL)
        text, offset, inode = await loop.run_in_executor(None, read_more, path, offset, inode)
        if text:
            quiet = 0.0
            yield sse(text)
        else:
            quiet += POLL
            if quiet >= KEEPALIVE:
                quiet = 0.0
                yield b": keep-alive\n\n"
