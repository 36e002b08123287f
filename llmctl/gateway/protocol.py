"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol (its C parser; the pure-Python
h11 one where httptools is not installed) plus a deadline for a request's headers. uvicorn
times out only idle keep-alive connections, so a client that sends its headers a byte at a
time (slowloris), or nothing at all, would hold a connection for ever.

The deadline starts when a connection opens, and again at the first byte of each next request
on a kept-alive one (idle time between requests is uvicorn's ``timeout_keep_alive``); it ends
when the headers are complete. Past it the connection is closed. Imported with uvicorn."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("llmctl.gateway")


class HeaderDeadline:
    """The deadline, mixed into a uvicorn protocol class (``header_timeout`` set on the subclass);
    the subclass calls :meth:`_headers_done` when a request's headers are complete."""

    header_timeout = 10.0
    _deadline: Any = None
    _awaiting = True  #: the next request's headers are not complete yet
    loop: Any
    transport: Any
    client: Any

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._awaiting and self._deadline is None:
            self._arm()
        super().data_received(data)  # type: ignore[misc]

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _headers_done(self) -> None:
        self._awaiting = False
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closed a connection from %s: no complete request headers within %s s "
                      "(serve --header-timeout)", self.client, self.header_timeout)
            self.transport.close()


def _httptools_class() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsDeadline(HeaderDeadline, HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._headers_done()

        def on_response_complete(self) -> None:
            # a pipelined request waiting has its headers; else the next one's first byte arms
            self._awaiting = not self.pipeline
            super().on_response_complete()

    return HttpToolsDeadline


def _h11_class() -> type:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11Deadline(HeaderDeadline, H11Protocol):
        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers arrived
                self._headers_done()

        def on_response_complete(self) -> None:
            self._awaiting = True  # armed by the next request's first byte
            super().on_response_complete()  # may take a pipelined request at once

    return H11Deadline


def protocol_class(header_timeout: float, parser: str = "auto") -> type:
    """A uvicorn ``http`` protocol class that closes connections whose request headers take
    longer than ``header_timeout`` seconds. ``parser``: ``httptools``, ``h11``, or ``auto``
    (httptools where it is installed)."""
    if parser == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            parser = "h11"
        else:
            parser = "httptools"
    base = _httptools_class() if parser == "httptools" else _h11_class()
    return type(base.__name__, (base,), {"header_timeout": header_timeout})
