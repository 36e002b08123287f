"""Helpers for tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 180,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `llmctl` command in a subprocess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmctl", *args], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=timeout, input=input)


def write_profiles(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def wait_for(pred, timeout: float = 30.0, what: str = "condition"):
    """Poll ``pred`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


FREEZER = Path("/sys/fs/cgroup/freezer")


def end_process(proc, timeout: float = 20) -> None:
    """Terminate ``proc`` (a Popen), kill it if it outlives ``timeout``, and reap it."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def can_freeze() -> bool:
    """A cgroup-v1 freezer we may write to (root). Under cgroup v2's freezer SIGKILL still
    kills, so only v1 makes a process that outlives SIGKILL."""
    return FREEZER.is_dir() and os.access(FREEZER, os.W_OK)


@contextlib.contextmanager
def frozen(pid: int):
    """Freeze process ``pid`` in a cgroup-v1 freezer for the block: it sits in uninterruptible
    sleep (state D, like a process hung on a dead NFS mount) and outlives SIGKILL until it is
    thawed; a SIGKILL sent meanwhile ends it once thawed."""
    group = FREEZER / f"llmctl-test-{os.getpid()}-{pid}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "freezer.state").write_text("FROZEN")
        wait_for(lambda: (group / "freezer.state").read_text().strip() == "FROZEN", 10, "the freeze")
        yield
    finally:
        (group / "freezer.state").write_text("THAWED")
        for left in (group / "cgroup.procs").read_text().split():
            try:  # still alive: back to the root group, so that ours can go
                (FREEZER / "cgroup.procs").write_text(left)
            except OSError:
                pass
        wait_for(lambda: not (group / "cgroup.procs").read_text().split(), 10, "an empty freezer group")
        group.rmdir()


def read_timed(stream, timeout: float = 120) -> tuple[list[tuple[float, bytes]], float]:
    """Read a pipe to its end: every chunk with the monotonic time it arrived, and the time
    of the end."""
    fd, chunks = stream.fileno(), []
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no end of output within {timeout} s"
        data = os.read(fd, 65536)
        if not data:
            return chunks, time.monotonic()
        chunks.append((time.monotonic(), data))


def assert_streamed(t0: float, chunks: list[tuple[float, bytes]], end: float) -> None:
    """Output written as it was made, not all at once: many separate pieces, the first of them
    well before the end (relative to the whole run, so that a fast CPU passes as a slow one)."""
    assert len(chunks) >= 10, f"the output came in {len(chunks)} piece(s)"
    first = chunks[0][0]
    assert end - first >= 0.2 * (end - t0), (
        f"first byte {first - t0:.2f} s after the start, the end {end - first:.2f} s after it")
