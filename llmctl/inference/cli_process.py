"""cli mode's process: the one-shot tool runs in its own process group, its stdout is read as it
comes, and the group is killed whole when `run` is stopped (Ctrl-C, SIGTERM, SIGHUP: see
:class:`StopGuard`), times out, or the tool closes its stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable

from ..errors import EngineError, Interrupted, RequestTimeout

if TYPE_CHECKING:
    from types import FrameType

    _Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

#: signals that stop `run` while a tool runs: the tool's group goes first, and its files
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopped(BaseException):
    """A stop signal arrived while the tool ran (unwinds run_cli; never escapes it)."""


class StopGuard:
    """While a one-shot tool runs, SIGINT, SIGTERM and SIGHUP unwind
    :func:`llmctl.inference.cli_runner.run_cli` (which kills the tool's process group and removes
    its files) instead of ending the process at once; afterwards the signal is delivered again
    under the previous handler, so the process ends as it was asked to (Ctrl-C:
    KeyboardInterrupt). A signal arriving before the tool is started (or after it ended) is held
    until then. A signal the caller ignores (nohup's SIGHUP) stays ignored; outside the main
    thread, where no handler can be set, nothing changes."""

    def __enter__(self) -> StopGuard:
        self.got: int | None = None
        self.armed = False
        self.old: dict[int, _Handler] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.got is None:
            self.got = signum
            if self.armed:
                self.armed = False
                raise _Stopped()

    def arm(self) -> None:
        """From now until :meth:`disarm`, a stop signal raises at once."""
        self.armed = True
        if self.got is not None:
            self.armed = False
            raise _Stopped()

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if self.got is None:
            return
        if self.old.get(self.got) is signal.default_int_handler:
            raise KeyboardInterrupt
        os.kill(os.getpid(), self.got)  # the default action ends this process here
        raise Interrupted(f"stopped by signal {self.got}")


def spawn(argv: list[str], env: dict[str, str], workdir: str, errlog: IO[bytes], name: str,
          tool: str) -> subprocess.Popen[bytes]:
    """Start the tool in its own process group (killed whole), in ``workdir``."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog,
                                env=env, cwd=workdir, start_new_session=True)
    except OSError as exc:
        raise EngineError(f"{name}: cannot run {tool}: {exc.strerror or exc}", profile=name) from None


def end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the tool's whole group while its leader is unreaped (so the group id cannot
    belong to anyone else yet), then reap it and close its stdout."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def relay_output(proc: subprocess.Popen[bytes], feed: Callable[[str], None], deadline: float | None,
                 name: str, tool: str) -> int:
    """Pass the tool's stdout, decoded, to ``feed`` until it closes; return the exit status."""
    import codecs
    import selectors

    out = proc.stdout
    assert out is not None, "spawn() gives the tool a stdout pipe"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise RequestTimeout(f"{name}: {tool} did not finish within the timeout", profile=name)
            if not sel.select(wait):
                continue
            data = os.read(out.fileno(), 65536)
            if not data:
                break
            feed(decoder.decode(data))
    feed(decoder.decode(b"", final=True))
    remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
    try:
        return proc.wait(remaining)
    except subprocess.TimeoutExpired:
        raise RequestTimeout(f"{name}: {tool} did not exit within the timeout", profile=name) from None
