"""The gateway's HTTP/1.1 client for its servers (the upstream hop): asyncio protocols over
keep-alive connections, a few per server, responses read by httptools' C parser (llhttp).

It replaces httpx on this hop, where httpx's layers (httpcore, h11, anyio) took about half of
the gateway's own time per request (benchmarks/gateway_latency.py; the commit says how much).
It does only what the hop needs: one request at a time per connection, no redirects, proxies,
cookies or decoding (bodies are relayed as the server sent them).

Connections: an :class:`Origin` (scheme, host, port) keeps its idle connections, newest first.
One is reused only when it is alive: not closed by the server (seen by the event loop, or by a
look at the socket just before it is used), idle for less than the server's keep-alive timeout
(its ``Keep-Alive: timeout=N`` less a second; 4 s when it says none), and its last answer did
not say ``Connection: close`` (llama-server says it every 100 requests). A request whose reused
connection turns out closed is sent again, once, on a fresh one when nothing was sent yet, or
when its method is idempotent; a POST that reached a server which then closed without a byte
of answer is not sent twice (it may have been applied): that is :class:`BeforeFirstByte`.

Errors (defined in :mod:`llmctl.gateway.upstream_conn`): :class:`BeforeFirstByte` (cannot
connect, TLS refused, closed before the status line and headers were complete),
:class:`HeadTimeout` (no complete headers within the read timeout), :class:`UpstreamError`
(once the answer started: the connection broke, no byte for the read timeout, or a response
that does not parse).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Iterable

from .upstream_conn import BeforeFirstByte, Closed, Conn, HeadTimeout, Response, UpstreamError, why

__all__ = ["BeforeFirstByte", "HeadTimeout", "Origin", "Response", "UpstreamError", "split_url"]

MAX_IDLE = 64  #: idle connections kept per server
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Origin:
    """One server (scheme, host, port): its idle connections, and requests sent to it."""

    def __init__(self, scheme: str, host: str, port: int, *, prefix: str = "", verify: bool = True,
                 connect_timeout: float = 5.0, read_timeout: float = 600.0) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.prefix = prefix  #: the base URL's path, put before every request's
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.ssl = _tls(verify) if scheme == "https" else None
        default = 443 if scheme == "https" else 80
        self.host_header = (f"[{host}]" if ":" in host else host) + ("" if port == default else f":{port}")
        self.loop = asyncio.get_running_loop()
        self.idle: list[Conn] = []
        self.closed = False
        self.opened = 0  #: connections made so far (reuse shows as few)

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | None = None) -> Response:
        """Send the request; return the answer once its headers are in, its body still to read.
        Raises BeforeFirstByte, HeadTimeout (see the module's docstring)."""
        data = _request_bytes(method, self.prefix + target, self.host_header, headers, body)
        retried = False
        while True:
            conn = self._take()
            fresh = conn is None
            if conn is None:
                conn = await self._connect()
            resp = Response(conn, method, self.read_timeout)
            if not conn.send(data, resp):  # closed while idle: nothing was sent, try the next one
                if fresh:
                    raise BeforeFirstByte("the server closed the connection at once")
                continue
            try:
                await resp._head()
                return resp
            except Closed as exc:
                if fresh or retried or exc.got or method not in IDEMPOTENT:
                    raise BeforeFirstByte(f"the server closed the connection without answering ({exc})") from None
                retried = True  # a reused connection the server had closed: once more, on a fresh one
            except asyncio.CancelledError:
                resp.close()
                raise

    def _take(self) -> Conn | None:
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(self) -> Conn:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: Conn(self), self.host, self.port, ssl=self.ssl,
                                            server_hostname=self.host if self.ssl else None),
                self.connect_timeout)
            self.opened += 1
        except _ssl.SSLCertVerificationError as exc:
            raise BeforeFirstByte(f"the certificate of {self.host} did not verify ({exc.verify_message}); "
                                  f"`verify: false` in the profile skips the check, for a server you trust") from None
        except asyncio.TimeoutError:
            raise BeforeFirstByte(f"cannot connect to {self.host_header}: no answer within "
                                  f"{self.connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, TLS handshake failures (ssl.SSLError)
            raise BeforeFirstByte(f"cannot connect to {self.host_header}: {why(exc)}") from None
        return conn

    def put(self, conn: Conn) -> None:
        if self.closed or len(self.idle) >= MAX_IDLE:
            conn.close()
        else:
            self.idle.append(conn)

    def forget(self, conn: Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        """Close the idle connections; those in use close when their answer ends."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def split_url(url: str) -> tuple[str, str, int, str]:
    """``http://host:port/path?q`` -> (scheme, host, port, "/path?q")."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    netloc, slash, path = rest.partition("/")
    target = slash + path
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
        target = "/?" + query
    netloc = netloc.rpartition("@")[2]  # user:password@ is not sent
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port_s = tail[1:]
    else:
        host, _, port_s = netloc.partition(":")
    port = int(port_s) if port_s else (443 if scheme == "https" else 80)
    return scheme, host or "127.0.0.1", port, target or "/"


def _request_bytes(method: str, target: str, host: str, headers: Iterable[tuple[str, str]],
                   body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body or b'')}")
    lines.append("\r\n")
    head = "\r\n".join(lines)
    breaks = len(lines)  # one CRLF between lines, two at the end: any other is a header injected
    if head.count("\n") != breaks or head.count("\r") != breaks or "\x00" in head or " " in target:
        raise BeforeFirstByte("the request's line or headers hold a line break, NUL or space where none may be")
    try:
        out = head.encode("latin-1")
    except UnicodeEncodeError:
        raise BeforeFirstByte("the request's line or headers hold characters beyond latin-1") from None
    return out + body if body else out


_contexts: dict[bool, _ssl.SSLContext] = {}


def _tls(verify: bool) -> _ssl.SSLContext:
    ctx = _contexts.get(verify)
    if ctx is None:
        ctx = _contexts[verify] = _ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = _ssl.CERT_NONE
    return ctx
