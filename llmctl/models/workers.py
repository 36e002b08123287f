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

import contextlib
import signal
import threading
from collections.abc import Iterator
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

    n = max(1, min(parallel, len(jobs)))
    workers = _Workers(jobs, n, cancel)
    interrupted = threading.Event()
    with _ctrl_c_cancels(interrupted, cancel):
        for _ in range(n):
            threading.Thread(target=workers.work, name="llmctl-pull", daemon=True).start()
        _wait(workers.done, interrupted, cancel, on_slow_stop)
    if interrupted.is_set():
        raise Interrupted(interrupted_message())
    if workers.errors:
        raise next((e for e in workers.errors if not isinstance(e, Cancelled)), workers.errors[0])


class _Workers:
    """The jobs left, the errors met, and an event set when the last worker has stopped."""

    def __init__(self, jobs: list[Callable[[], object]], n: int, cancel: threading.Event) -> None:
        self.pending = list(jobs)
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.running = n
        self.done = threading.Event()
        self.cancel = cancel

    def _next(self) -> Callable[[], object] | None:
        with self.lock:
            return self.pending.pop(0) if self.pending else None

    def work(self) -> None:
        try:
            while not self.cancel.is_set():
                job = self._next()
                if job is None:
                    return
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self.cancel.set()
                    with self.lock:
                        self.errors.append(exc)
        finally:
            with self.lock:
                self.running -= 1
                if self.running == 0:
                    self.done.set()


@contextlib.contextmanager
def _ctrl_c_cancels(interrupted: threading.Event, cancel: threading.Event) -> Iterator[None]:
    """Inside, in the main thread: the first Ctrl-C sets ``interrupted`` and ``cancel``; a second
    raises KeyboardInterrupt (stop waiting). Elsewhere no handler can be set: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:  # runs in the main thread, between its waits
        if interrupted.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: stop waiting
        interrupted.set()
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait(done: threading.Event, interrupted: threading.Event, cancel: threading.Event,
          on_slow_stop: Callable[[str], None]) -> None:
    """Until the workers have stopped; after Ctrl-C, say so if they take a while."""
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
