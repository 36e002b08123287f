"""The keeper lock (llmctl/supervise/locks.py) with real flocks held by real processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading

from llmctl.supervise.control import _lock_or_none
from llmctl.supervise.locks import is_held, try_lock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX if sys.argv[2] == "ex" else fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold(path, mode: str, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_keeper_holding_the_lock_is_seen_and_keeps_it(tmp_path):
    lock = tmp_path / "srv.lock"
    assert not is_held(lock) and not lock.exists()  # checking creates nothing
    p = hold(lock, "ex", 30)
    try:
        assert is_held(lock)
        assert try_lock(lock) is None
    finally:
        p.kill()
        p.wait()
    assert not is_held(lock)


def test_a_checker_is_never_taken_for_a_keeper(tmp_path):
    """A checker holds the lock shared for a moment; another checker must not see a keeper in
    it, and `up` must wait the moment out rather than give up the profile to nobody."""
    lock = tmp_path / "srv.lock"
    lock.touch()
    checker = hold(lock, "sh", 60)  # a status caller preempted while it checks
    try:
        assert not is_held(lock)
        assert try_lock(lock) is None  # what `up` once took for a keeper
        threading.Timer(0.1, checker.kill).start()  # the checker goes on and lets go
        fd = _lock_or_none(lock, wait=10)
        assert fd is not None, "up gave the profile up to a checker"
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    finally:
        checker.kill()
        checker.wait()
