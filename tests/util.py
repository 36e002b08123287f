"""Helpers for tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
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
