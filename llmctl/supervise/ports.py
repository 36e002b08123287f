"""Is a port free, and if not, who holds it?"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass


@dataclass
class Holder:
    pid: int | None
    program: str
    cmdline: str

    def describe(self) -> str:
        if self.pid is None:
            return "a process llmctl cannot see (another user, or a container)"
        return f"pid {self.pid} ({self.program}: {self.cmdline[:120]})"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_holder(port: int) -> Holder | None:
    """The process listening on ``port`` (any address), where psutil can see it."""
    import psutil

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return Holder(None, "", "")
    for c in conns:
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN:
            if c.pid is None:
                return Holder(None, "", "")
            try:
                p = psutil.Process(c.pid)
                return Holder(c.pid, p.name(), " ".join(p.cmdline()))
            except psutil.Error:
                return Holder(c.pid, "?", "")
    return None
