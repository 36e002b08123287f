"""How a pull's transfers stop: errors cancel the others, Ctrl-C (a real SIGINT to this
process) sets the cancel event instead of raising inside library code, and a transfer that does
not notice is waited for, with a message, until a second Ctrl-C. The jobs are plain functions
standing in for transfers, so the timing can be controlled."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from llmctl.errors import Interrupted
from llmctl.models import workers
from llmctl.models.transfer import Cancelled


def _sigint_later(delay: float) -> threading.Timer:
    t = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


def _cancellable(cancel: threading.Event, seen: list):
    def job():
        while not cancel.wait(0.01):
            pass
        seen.append(threading.current_thread().name)
        raise Cancelled()
    return job


def test_first_error_cancels_the_rest_and_is_raised():
    cancel = threading.Event()
    seen: list = []

    def boom():
        time.sleep(0.05)
        raise ValueError("the bad file")

    with pytest.raises(ValueError, match="the bad file"):
        workers.run_all([_cancellable(cancel, seen), boom, _cancellable(cancel, seen)], 4, cancel)
    assert len(seen) == 2 and cancel.is_set()


def test_jobs_beyond_the_parallel_limit_wait_their_turn():
    cancel = threading.Event()
    active, peak, lock = [0], [0], threading.Lock()
    done = []

    def job(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        done.append(i)

    workers.run_all([lambda i=i: job(i) for i in range(9)], 3, cancel)
    assert sorted(done) == list(range(9)) and peak[0] == 3


def test_ctrl_c_cancels_the_transfers_and_raises_interrupted():
    cancel = threading.Event()
    seen: list = []
    before = signal.getsignal(signal.SIGINT)
    _sigint_later(0.2)
    with pytest.raises(Interrupted, match="kept: 2"):
        workers.run_all([_cancellable(cancel, seen)] * 2, 4, cancel,
                        interrupted_message=lambda: f"kept: {len(seen)}")
    assert len(seen) == 2
    assert signal.getsignal(signal.SIGINT) is before


def test_a_transfer_that_does_not_notice_is_waited_for_until_a_second_ctrl_c(monkeypatch):
    monkeypatch.setattr(workers, "QUIET_STOP", 0.2)
    cancel = threading.Event()
    release = threading.Event()
    said: list[str] = []

    def stuck():  # a read that never returns (until the test ends it)
        release.wait(30)

    _sigint_later(0.1)
    second = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    second.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            workers.run_all([stuck], 1, cancel, on_slow_stop=said.append)
        took = time.monotonic() - t0
    finally:
        release.set()
        second.cancel()
    assert said and "Ctrl-C again" in said[0]
    assert 0.9 < took < 5
