"""Upstream forwarding: one connection pool per running profile (:mod:`llmctl.gateway.upstream`:
its connections die with the server, so the pool is dropped when the server stops), and a
streaming response that relays Server-Sent Events as they arrive.

Failures: a server that cannot be reached, or closes the connection before it answers, raises
:class:`BeforeFirstByte` (the caller tries the task's fallbacks); one that sends no headers
within serve's ``--upstream-timeout`` raises :class:`UpstreamTimeout` (504); once the answer has
started, a broken stream ends with an error event (``data: {"error": {...}}``, what OpenAI
clients raise as APIError). A client that goes away closes the upstream request at once, which
makes llama-server stop generating.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from .errors import UpstreamTimeout
from .records import Lease
from .upstream import BeforeFirstByte, HeadTimeout, Origin, Response, UpstreamError, split_url

__all__ = ["BeforeFirstByte", "ProxyStream", "Response", "Shape", "Upstreams", "read_body", "relay_headers"]

#: response headers not relayed (hop-by-hop, or recomputed by the gateway's server)
HOP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"trailer",
               b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"www-authenticate", b"date",
               b"server"}
TAIL_BYTES = 16384


class Rewrite(Protocol):
    """An event stream rewritten on its way to the client, piece by piece (another API's events)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...


@dataclass
class Shape:
    """A request sent to a server in a shape of its own (another path, another API), and how its
    answer is given back: a whole answer through ``answer(status, body)``, an event stream
    through a fresh ``stream()``; a stream the server breaks off ends with ``error_event``."""

    path: str
    body: bytes | None
    answer: Callable[[int, bytes], bytes] | None = None
    stream: Callable[[], Rewrite] | None = None
    error_event: Callable[[str, str], bytes] | None = None

    @classmethod
    def of(cls, built: bytes | Shape | None, path: str) -> Shape:
        """What a request builder gave: a Shape, or the body for ``path`` (relayed as it is)."""
        return built if isinstance(built, Shape) else cls(path, built)


class Upstreams:
    """Per-profile connection pools (keep-alive connections to each server)."""

    def __init__(self, read_timeout: float, insecure: frozenset[str] = frozenset()) -> None:
        self.read_timeout = read_timeout
        self.connect_timeout = 5.0
        self.insecure = insecure  #: profiles whose https certificate is not checked (``verify: false``)
        self._origins: dict[str, tuple[str, Origin]] = {}  #: profile -> (its base URL, its pool)

    def origin(self, name: str, base: str) -> Origin:
        """``name``'s pool, for its server at ``base`` (the profile's URL)."""
        held = self._origins.get(name)
        if held is not None and held[0] == base:
            return held[1]
        if held is not None:  # the profile's URL changed (a reload)
            held[1].close()
        scheme, host, port, prefix = split_url(base)
        origin = Origin(scheme, host, port, prefix=prefix.rstrip("/"), verify=name not in self.insecure,
                        connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)
        self._origins[name] = (base, origin)
        return origin

    def drop(self, name: str) -> None:
        """Forget ``name``'s pool and its idle connections (the server stopped or restarted)."""
        held = self._origins.pop(name, None)
        if held is not None:
            held[1].close()

    async def aclose(self) -> None:
        for name in list(self._origins):
            self.drop(name)

    async def open(self, name: str, method: str, base: str, target: str, headers: Iterable[tuple[str, str]],
                   content: bytes | None) -> Response:
        """Send ``method base+target``; return the response with its body still to read. A
        connection the server closed while it sat in the pool is replaced (see upstream.py)."""
        try:
            origin = self.origin(name, base)
        except ValueError as exc:
            raise BeforeFirstByte(str(exc)) from None
        try:
            return await origin.request(method, target, headers, content)
        except HeadTimeout:
            raise UpstreamTimeout(f"{name}: no answer from {base}{target} in time (serve --upstream-timeout)",
                                  profile=name) from None


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def read_body(resp: Response) -> bytes:
    """The whole (raw, undecoded) body; the response is closed afterwards."""
    return await resp.read()


def relay_headers(resp: Response, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The server's headers worth relaying; never its CORS grants (llama-server allows every
    origin), so that pages of other sites cannot read the gateway's answers."""
    out = []
    for k, v in resp.raw_headers:
        k = k.lower()
        if k not in HOP_HEADERS and not k.startswith(b"access-control-"):
            out.append((k, v))
    return out + extra


def sse_error(message: str, profile: str) -> bytes:
    err = {"error": {"message": message, "type": "upstream_error", "code": 502, "profile": profile}}
    return b"data: " + json.dumps(err).encode() + b"\n\n"


def usage_of(obj: Any) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens from an answer's ``usage``, else llama-server's ``timings``."""
    if not isinstance(obj, dict):
        return None, None
    usage = obj.get("usage")
    if isinstance(usage, dict) and (usage.get("prompt_tokens") is not None or usage.get("completion_tokens")):
        return usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(usage, dict) and usage.get("output_tokens") is not None:  # Anthropic's: cache reads apart
        prompt = usage.get("input_tokens")
        if prompt is not None:
            prompt += usage.get("cache_read_input_tokens") or 0
        return prompt, usage.get("output_tokens")
    t = obj.get("timings")
    if isinstance(t, dict):
        prompt = (t.get("prompt_n") or 0) + (t.get("cache_n") or 0)
        return prompt or None, t.get("predicted_n")
    return None, None


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
USAGE_KEYS = (b'"usage"', b'"timings"')  #: the top-level members :func:`usage_of` reads
CANDIDATES = 8  #: occurrences of a key tried (from the end) before giving up on it


def usage_from_body(body: bytes) -> tuple[int | None, int | None]:
    """:func:`usage_of` for a whole JSON answer, without parsing all of it: servers put
    ``usage`` (and llama-server ``timings``) among the last members, after a body that may be
    megabytes of embeddings. Each key is found from the end and checked to be a member of the
    top-level object (the members from it to the end parse, then the document ends); only
    those members are parsed. A body cut off, or not a JSON object, gives (None, None)."""
    members: dict[str, Any] = {}
    for key in USAGE_KEYS:
        members.update(_members_from(body, key) or {})
        found = usage_of(members)
        if found != (None, None):
            return found
    return None, None


def _members_from(body: bytes, key: bytes) -> dict[str, Any] | None:
    """The top-level members from the last occurrence of ``key`` that is one, to the end."""
    end = len(body)
    for _ in range(CANDIDATES):
        at = body.rfind(key, 0, end)
        if at < 0:
            return None
        end = at
        if _escaped(body, at):
            continue
        try:
            found = _tail_members(body[at:].decode())
        except (ValueError, IndexError, RecursionError):  # UnicodeDecodeError included
            continue
        if found is not None:
            return found
    return None


def _escaped(body: bytes, at: int) -> bool:
    """The quote at ``at`` is escaped (inside a string): an odd run of backslashes before it."""
    run = 0
    while at - run - 1 >= 0 and body[at - run - 1] == 0x5C:
        run += 1
    return run % 2 == 1


def _tail_members(text: str) -> dict[str, Any] | None:
    """Parse ``"k": v, ... }`` to the end of ``text``; None unless the document ends there."""
    out: dict[str, Any] = {}
    pos = 0
    while True:
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not isinstance(key, str) or text[pos] != ":":
            return None
        value, pos = _DECODER.raw_decode(text, _skip(text, pos + 1))
        out[key] = value
        pos = _skip(text, pos)
        if text[pos] == "}":
            return out if _skip(text, pos + 1) == len(text) else None
        if text[pos] != ",":
            return None
        pos = _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def usage_from_sse(tail: bytes) -> tuple[int | None, int | None]:
    """Token counts from the last events of a stream (the final chunk carries them)."""
    for line in reversed(tail.split(b"\n")):
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data.startswith(b"{") or (b'"usage"' not in data and b'"timings"' not in data):
            continue
        try:
            found = usage_of(json.loads(data))
        except ValueError:
            continue
        if found != (None, None):
            return found
    return None, None


def _last_event(tail: bytes) -> bool:
    """The stream's last event was sent: OpenAI's ``[DONE]``, Anthropic's ``message_stop``."""
    last = tail.rstrip().rsplit(b"\n", 1)[-1]
    return last == b"data: [DONE]" or (last.startswith(b"data:") and b'"message_stop"' in last)


async def wait_disconnect(receive: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ProxyStream:
    """An ASGI response that relays an upstream event stream chunk by chunk, as it arrives.

    Ends: the upstream finishes (``ok``); the upstream breaks (an error event is sent:
    ``upstream_error``); the client goes away (``client_gone``: the upstream request is closed
    at once, which cancels the generation). Whatever happens, even if it is never sent, the
    lease is released and ``on_end(outcome, tail)`` is called exactly once.
    """

    def __init__(self, upstream: Response, lease: Lease, headers: list[tuple[bytes, bytes]],
                 on_end: Callable[[str, bytes], None], shape: Shape | None = None) -> None:
        self.upstream, self.lease, self.headers, self.on_end = upstream, lease, headers, on_end
        self.rewrite = shape.stream() if shape and shape.stream else None
        self.error_event = shape.error_event if shape and shape.error_event else sse_error
        self._ended = False

    async def __call__(self, scope, receive, send) -> None:
        tail = bytearray()
        outcome = "client_gone"
        try:
            await send({"type": "http.response.start", "status": self.upstream.status_code, "headers": self.headers})
            pump = asyncio.ensure_future(self._pump(send, tail))
            watch = asyncio.ensure_future(wait_disconnect(receive))
            try:
                done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                pump.cancel()
                watch.cancel()
                results = await asyncio.gather(pump, watch, return_exceptions=True)
            if pump in done and isinstance(results[0], str):
                outcome = results[0]
            elif _last_event(bytes(tail)):
                outcome = "ok"  # the client left after the last event, before the upstream's end
        finally:
            await self.close(outcome, bytes(tail))

    async def _pump(self, send, tail: bytearray) -> str:
        outcome = "ok"
        try:
            async for chunk in self.upstream.aiter_raw():
                out = self.rewrite.feed(chunk) if self.rewrite else chunk
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                tail += chunk
                if len(tail) > TAIL_BYTES:
                    del tail[:-TAIL_BYTES]
        except UpstreamError as exc:
            outcome = "upstream_error"
            name = self.lease.name
            message = f"{name}: the server stopped in the middle of the answer ({_why(exc)})"
            sep = b"" if not tail or tail.endswith(b"\n\n") or self.rewrite else b"\n\n"
            await send({"type": "http.response.body", "body": sep + self.error_event(message, name), "more_body": True})
        last = self.rewrite.end() if self.rewrite and outcome == "ok" else b""
        await send({"type": "http.response.body", "body": last, "more_body": False})
        return outcome

    async def close(self, outcome: str = "client_gone", tail: bytes = b"") -> None:
        """Close the upstream, release the lease, report (once)."""
        if self._ended:
            return
        self._ended = True
        try:
            self.upstream.close()  # synchronous: nothing to wait for, nothing a cancellation can cut short
        finally:
            self.lease.release()
            self.on_end(outcome, tail)


def now() -> float:
    return time.monotonic()
