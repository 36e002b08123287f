"""The gateway's HTTP/1.1 connections: uvicorn's h11 protocol plus a deadline for a request's
headers. uvicorn times out only idle keep-alive connections, so a client that sends its
headers a byte at a time (slowloris), or nothing at all, would hold a connection for ever.

The deadline starts when a connection opens, and again at the first byte of each next request
on a kept-alive one (idle time between requests is uvicorn's ``timeout_keep_alive``); it ends
when the headers are complete. Past it the connection is closed. Imported with uvicorn."""

from __future__ import annotations

import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("llmctl.gateway")


def protocol_class(header_timeout: float) -> type:
    """A uvicorn ``http`` protocol class that closes connections whose request headers take
    longer than ``header_timeout`` seconds."""

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline = None
        _awaiting = True  #: the next request's headers are not complete yet

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._awaiting and self._deadline is None:
                self._arm()
            super().data_received(data)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers arrived
                self._awaiting = False
                self._disarm()

        def on_response_complete(self) -> None:
            self._awaiting = True  # armed by the next request's first byte
            super().on_response_complete()  # may take a pipelined request at once

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                log.debug("closed a connection from %s: no complete request headers within %s s "
                          "(serve --header-timeout)", self.client, header_timeout)
                self.transport.close()

    return HeaderDeadlineProtocol
