"""Running a pull's file transfers so that Ctrl-C stops them cleanly, every time.

A KeyboardInterrupt raised in the middle of library code (the HTTP client's connection pool, a
queue, a buffered write) can leave a lock held, and the process then hangs on its way out: seen
once in CI, a pull that ignored Ctrl-C for 30 s. So no transfer runs in the main thread. While
they run, Ctrl-C only sets ``cancel``: each transfer checks it before every chunk it writes and
stops with :class:`~llmctl.models.transfer.Cancelled`, keeping its partial file. The main thread
just waits. A transfer stuck in a read ends at the download timeout; the user is told so after
a moment, and a second Ctrl-C stops waiting at once (the workers are daemon threads, and what a
partial file holds on disk is a valid prefix, so nothing is lost by leaving them).
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from ..errors import Interrupted

#: seconds to wait after Ctrl-C before saying what is being waited for
QUIET_STOP = 2.0


def run_all(jobs: list[Callable[[], object]], parallel: int, cancel: threading.Event, *,
            on_slow_stop: Callable[[str], None] = lambda text: None,
            interrupted_message: Callable[[], str] = lambda: "interrupted") -> None:
    """Run ``jobs`` on up to ``parallel`` daemon threads. The first error (other than a
    cancellation it caused) sets ``cancel`` and is raised once all workers have stopped. Ctrl-C
    in the main thread sets ``cancel`` and raises :class:`Interrupted` with
    ``interrupted_message()`` once the workers have stopped (or at a second Ctrl-C)."""
    from .transfer import Cancelled

    pending = list(jobs)
    errors: list[BaseException] = []
    lock = threading.Lock()
    n = max(1, min(parallel, len(jobs)))
    running = [n]
    done = threading.Event()

    def worker() -> None:
        try:
            while not cancel.is_set():
                with lock:
                    if not pending:
                        return
                    job = pending.pop(0)
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    cancel.set()
                    with lock:
                        errors.append(exc)
        finally:
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    done.set()

    interrupted = threading.Event()
    previous = None
    in_main = threading.current_thread() is threading.main_thread()

    def on_sigint(signum, frame):  # runs in the main thread, between its waits
        if interrupted.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: stop waiting
        interrupted.set()
        cancel.set()

    if in_main:
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        for _ in range(n):
            threading.Thread(target=worker, name="llmctl-pull", daemon=True).start()
        try:
            while not done.wait(0.1):
                if interrupted.is_set():
                    if not done.wait(QUIET_STOP):
                        on_slow_stop("stopping: waiting for a transfer to notice (Ctrl-C again to quit now)")
                        done.wait()
                    break
        except KeyboardInterrupt:
            cancel.set()
            interrupted.set()
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise Interrupted(interrupted_message())
    if errors:
        raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
