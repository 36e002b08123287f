"""The OS calls a keeper makes, behind one small object (tests swap in a fake)."""

from __future__ import annotations

import ctypes
import http.client
import os
import subprocess
import sys
import time

import psutil

from .identity import ProcId
from .machine import Health
from .stop import stop_tree

PR_SET_CHILD_SUBREAPER = 36


class OsOps:
    """Real processes, the monotonic clock, HTTP health probes."""

    def __init__(self) -> None:
        self._wake_r = -1
        #: exit status (code, or -signal) of our children that the last stop() waited for and so reaped
        self.stopped_codes: dict[int, int] = {}

    def wake_on_signals(self) -> None:
        """Let a signal (SIGTERM from `down`) cut a sleep short, so a stop starts at once."""
        import signal

        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)
        self._wake_r = r

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if self._wake_r < 0:
            time.sleep(seconds)
            return
        import select

        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def become_subreaper(self) -> bool:
        """Orphaned descendants of the server (double forks, setsid escapes) are re-parented to
        this process instead of init, so the keeper can still find and stop them."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
        except (OSError, AttributeError):
            return False

    def spawn(self, argv: list[str], env: dict[str, str], log_fd: int) -> ProcId:
        """Start the server in its own process group (its pid is the group id), in the keeper's
        session: see keeper.py on why not a session of its own."""
        group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                close_fds=True, **group)
        proc.returncode = 0  # we reap it ourselves (reap()); keep Popen from complaining later
        ident = ProcId.of(proc.pid)
        return ident or ProcId(proc.pid, time.time())

    def reap(self) -> list[tuple[int, int | None, int | None]]:
        """Collect every exited child: (pid, exit code, signal)."""
        out: list[tuple[int, int | None, int | None]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if os.WIFSIGNALED(status):
                out.append((pid, None, os.WTERMSIG(status)))
            elif os.WIFEXITED(status):
                out.append((pid, os.WEXITSTATUS(status), None))
        return out

    def health(self, host: str, port: int, path: str, timeout: float = 2.0) -> Health:
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return Health.DOWN
        finally:
            conn.close()
        if status == 200:
            return Health.OK
        if status == 503:
            return Health.LOADING
        return Health.DOWN

    def alive(self, proc: ProcId) -> bool:
        return proc.alive()

    def stop(self, leader: ProcId | None, members: list[ProcId], timeout: float) -> list[ProcId]:
        """Stop the tree (including orphans re-parented to us); what survived (nothing: [])."""
        extra = []
        try:
            extra = psutil.Process().children(recursive=True)
        except psutil.Error:
            pass
        self.stopped_codes = {}
        survivors, _ = stop_tree(leader, members, timeout=timeout, extra=extra, codes=self.stopped_codes)
        return [i for i in (ProcId.of(p.pid) for p in survivors) if i is not None]

    def descendants(self, leader: ProcId) -> list[ProcId]:
        """The server's descendants plus our other children (re-parented orphans)."""
        out: list[ProcId] = []
        try:
            procs = psutil.Process().children(recursive=True)
        except psutil.Error:
            return out
        for p in procs:
            ident = ProcId.of(p.pid) if p.pid != leader.pid else None
            if ident is not None:
                out.append(ident)
        return out
