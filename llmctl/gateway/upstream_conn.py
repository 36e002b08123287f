"""One keep-alive connection to a server (:class:`Conn`, an asyncio protocol) and the answer
it is reading (:class:`Response`, fed by httptools' C parser, llhttp), with the upstream hop's
errors. The pool of connections and the requests are in :mod:`llmctl.gateway.upstream`.

Timeouts: the read timeout counts from the last byte that came (like a socket read timeout):
before the headers are complete it is :class:`HeadTimeout`, after it :class:`UpstreamError`.
A body is buffered up to ``HIGH_WATER`` bytes ahead of a slow reader, then the connection is
not read until the reader catches up.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httptools

IDLE_S = 4.0  #: longest idle time of a reused connection when the server gives no keep-alive timeout
HIGH_WATER = 1 << 20  #: bytes buffered from a server before its connection stops being read
_HEAD, _BODY, _DONE, _FAILED = range(4)


class Pool(Protocol):
    """Where a connection goes back when its answer is done (upstream.Origin)."""

    loop: asyncio.AbstractEventLoop

    def put(self, conn: Conn) -> None: ...

    def forget(self, conn: Conn) -> None: ...


class BeforeFirstByte(Exception):
    """The server could not be reached, or closed the connection before answering."""


class HeadTimeout(Exception):
    """The server sent no complete status line and headers within the read timeout."""


class UpstreamError(Exception):
    """The answer had started, then the connection broke, stalled, or sent what does not parse."""


class Closed(Exception):
    """The connection closed before the headers were complete (``got``: any byte had come)."""

    def __init__(self, why: str, got: bool) -> None:
        super().__init__(why)
        self.got = got


class Response:
    """A server's answer: ``status_code``, ``raw_headers`` as received, and the body, read
    whole (:meth:`read`) or piece by piece as it arrives (:meth:`aiter_raw`). :meth:`close`
    before the end closes the connection (a server that is generating stops)."""

    def __init__(self, conn: Conn, method: str, read_timeout: float) -> None:
        self.conn = conn
        self.head_only = method == "HEAD"
        self.timeout = read_timeout
        self.status_code = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_type = ""
        self._delimited = False  #: Content-Length or chunked: else the body ends when the connection does
        self._interim = False  #: a 1xx answer is being read (the real one follows)
        self._state = _HEAD
        self._error: BaseException | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._streaming = False  #: wake the reader at each piece (else only at the end)
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- what the caller reads ---------------------------------------------------------------
    async def read(self) -> bytes:
        """The whole body; the response is closed afterwards."""
        try:
            while self._state == _BODY:
                await self._wait()
            if self._state == _FAILED:
                raise self._error  # type: ignore[misc]
            return b"".join(self._chunks)
        finally:
            self._chunks.clear()
            self.close()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (what has come since the last piece, joined)."""
        self._streaming = True
        while True:
            if self._chunks:
                yield self._take()
            elif self._state == _BODY:
                await self._wait()
            elif self._state == _FAILED:
                raise self._error  # type: ignore[misc]
            else:
                return

    def close(self) -> None:
        """Done with it: a connection with an answer still coming is closed (never reused)."""
        if self._state == _BODY or self._state == _HEAD:
            self._fail(UpstreamError("closed by the gateway"))
            self.conn.abort()

    async def aclose(self) -> None:
        self.close()

    def _take(self) -> bytes:
        chunks = self._chunks
        out = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        if len(chunks) > 0:
            chunks.clear()
        self._buffered = 0
        self.conn.resume()
        return out

    async def _head(self) -> None:
        while self._state == _HEAD:
            await self._wait()
        if self._state == _FAILED and self.status_code == 0:
            raise self._error  # type: ignore[misc]

    async def _wait(self) -> None:
        loop = self.conn.loop
        self._waiter = fut = loop.create_future()
        self._timer = loop.call_later(self.timeout, self._expire)
        try:
            await fut
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _expire(self) -> None:
        """The read timeout, counted from the last byte that came (as a socket read timeout)."""
        idle = self.conn.loop.time() - self.conn.rx_at
        if idle < self.timeout:
            self._timer = self.conn.loop.call_later(self.timeout - idle, self._expire)
            return
        self._timer = None
        if self._state == _HEAD:
            self._fail(HeadTimeout(f"no answer within {self.timeout:g} s"))
        else:
            self._fail(UpstreamError(f"no data from the server for {self.timeout:g} s"))
        self.conn.abort()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._state in (_DONE, _FAILED):
            return
        self._state, self._error = _FAILED, exc
        self._wake()

    def _eof(self, exc: BaseException | None = None) -> None:
        """The connection ended (``exc``: why, when it broke)."""
        if self._state == _HEAD:
            self._fail(Closed(why(exc) if exc else "the server closed the connection without answering", self.conn.got))
        elif self._state == _BODY:
            if self._delimited or exc is not None:
                self._fail(UpstreamError(why(exc) if exc else "the server closed the connection before the end "
                                         "of the answer"))
            else:  # the body was delimited by the connection's end
                self._state = _DONE
                self._wake()

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._state == _DONE:  # bytes after a whole answer: this connection cannot be trusted
            self.conn.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._state != _HEAD:
            return
        self.raw_headers.append((name, value))
        lower = name.lower()
        if lower == b"content-type":
            self.content_type = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self._delimited = True
        elif lower == b"keep-alive":
            self.conn.keep_alive(value)

    def on_headers_complete(self) -> None:
        if self._state != _HEAD:
            return
        status = self.conn.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self._interim = True
            self.raw_headers, self.content_type, self._delimited = [], "", False
            return
        self.status_code = status
        self._state = _BODY
        if self.head_only:  # no body, whatever Content-Length says; closed (the parser would wait for one)
            self._state = _DONE
            self.conn.close()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._state != _BODY:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and self._streaming:
            self.conn.pause()
        if self._streaming:
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._state != _BODY:
            return
        self._state = _DONE
        self.conn.finished(self.conn.parser.should_keep_alive())
        self._wake()


class Conn(asyncio.Protocol):
    """One connection to a server; carries one request at a time."""

    def __init__(self, origin: Pool) -> None:
        self.origin = origin
        self.loop = origin.loop
        self.transport: asyncio.Transport | None = None
        self.fd = -1  #: looked at before reuse (plain TCP only)
        self.parser: Any = None
        self.resp: Response | None = None
        self.lost = False
        self.reusable = True
        self.paused = False
        self.idle_since = 0.0
        self.idle_limit = IDLE_S
        self.keep_alive_seen = b""
        self.got = False  #: a byte of the answer to the current request came
        self.rx_at = 0.0

    # -- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # asyncio and uvloop set it on TCP sockets already: made sure (else ~40 ms per request)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
            if transport.get_extra_info("sslcontext") is None:
                self.fd = sock.fileno()

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes nobody asked for: not usable any more
            self.reusable = False
            self.abort()
            return
        self.got, self.rx_at = True, self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            if resp._state == _HEAD:
                resp._fail(Closed(f"the server's answer does not parse as HTTP/1.1 ({exc})", True))
            else:
                resp._fail(UpstreamError(f"the server's answer does not parse as HTTP/1.1 ({exc})"))
            self.abort()

    def eof_received(self) -> bool:
        self.lost = True
        if self.resp is not None:
            self.resp._eof()
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.origin.forget(self)
        resp, self.resp = self.resp, None
        if resp is not None:
            resp._eof(exc)

    # -- the client's side ---------------------------------------------------------------
    def usable(self, now: float) -> bool:
        """Alive and fit for another request (a look at the socket: a server's close that the
        event loop has not reported yet shows as a readable socket)."""
        if self.lost or not self.reusable or now - self.idle_since > self.idle_limit:
            return False
        if self.fd >= 0:
            poll = select.poll()  # not select(): no limit on the descriptor's number
            poll.register(self.fd, select.POLLIN)
            try:
                if poll.poll(0):
                    return False
            except OSError:
                return False
        return True

    def send(self, data: bytes, resp: Response) -> bool:
        """Write a request; False when the connection is closing already (nothing was sent)."""
        t = self.transport
        if self.lost or t is None or t.is_closing():
            return False
        self.resp = resp
        self.parser = httptools.HttpResponseParser(resp)
        self.got, self.rx_at = False, self.loop.time()
        t.write(data)
        return True

    def finished(self, keep_alive: bool) -> None:
        """The whole answer came: back to the pool, or closed."""
        self.resp = None
        if self.paused:
            self.resume()
        if keep_alive and self.reusable and not self.lost:
            self.idle_since = self.loop.time()
            self.origin.put(self)
        else:
            self.close()

    def keep_alive(self, value: bytes) -> None:
        """``Keep-Alive: timeout=5, max=100``: reused only while idle less than timeout - 1 s."""
        if value == self.keep_alive_seen:  # a server says the same each time
            return
        self.keep_alive_seen = value
        for part in value.split(b","):
            k, _, v = part.strip().partition(b"=")
            if k.lower() == b"timeout" and v.strip().isdigit():
                self.idle_limit = max(0.0, min(IDLE_S * 30, int(v) - 1.0))

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.lost:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


def why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
