"""What a request must be before anything reads it (ASGI middleware, the outermost layer):
a Host the gateway answers to, a body no bigger than ``serve --max-body-size``, and a body
that says it is JSON. The reasons are in :mod:`llmctl.gateway.security`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import BadRequest, Forbidden, GatewayHTTPError, PayloadTooLarge, UnsupportedMediaType
from .security import host_allowed, is_json_type

BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


async def json_body(request: Request) -> Any:
    """A request's JSON body, or BadRequest (400) saying why it is not one: not UTF-8, not JSON,
    cut off, or nested too deeply (which would otherwise be a 500)."""
    import json

    try:
        return json.loads(await request.body())
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"the request body is not JSON ({exc})") from None


def error_response(exc: GatewayHTTPError) -> JSONResponse:
    headers = {"retry-after": "1"} if exc.status == 429 else None
    if exc.status == 401:
        headers = {"www-authenticate": "Bearer"}
    if exc.status == 413:  # the rest of the body is not read: this connection cannot carry another request
        headers = {"connection": "close"}
    return JSONResponse(exc.body(), exc.status, headers=headers)


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is over {limit} bytes; send less, or raise the limit with "
                           f"`llmctl serve --max-body-size`")


class Guard:
    """Refuses what fails the checks, with an OpenAI-shaped error; counts the body's bytes as
    they arrive and raises :class:`PayloadTooLarge` (413) past ``max_body``, so a body is never
    held whole beyond the limit. ``hosts`` None: every Host (bound beyond loopback)."""

    def __init__(self, app, hosts: frozenset[str] | None, max_body: int) -> None:
        self.app, self.hosts, self.max_body = app, hosts, max_body
        self._hosts_seen: dict[bytes, bool] = {}  #: Host header -> allowed (a few values, each parsed once)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except GatewayHTTPError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, self.limited(receive), send)

    def check(self, scope) -> None:
        host = length = ctype = None
        chunked = False
        for k, v in scope["headers"]:  # the last of each wins, as a dict of them would
            if k == b"host":
                host = v
            elif k == b"content-length":
                length = v
            elif k == b"content-type":
                ctype = v
            elif k == b"transfer-encoding":
                chunked = True
        if self.hosts is not None and not self._host_ok(host):
            shown = host.decode("latin-1") if host is not None else None
            raise Forbidden(f"Host {shown!r} is not one this gateway answers to: it listens on loopback and answers "
                            f"localhost, 127.0.0.1 and [::1] only (a web page cannot reach it by another name); "
                            f"to allow a name, use `llmctl serve --allow-host NAME`")
        size = int(length) if length is not None and length.isdigit() else None
        if size is not None and size > self.max_body:
            raise too_large(self.max_body)
        has_body = bool(size) or chunked
        if scope["method"] in BODY_METHODS and (has_body or not scope["path"].startswith("/upstream/")):
            content_type = ctype.decode("latin-1") if ctype is not None else None
            if not is_json_type(content_type):
                raise UnsupportedMediaType(f"the request body must be JSON sent with `Content-Type: application/json` "
                                           f"(got {content_type or 'none'}); web pages cannot send that type to "
                                           f"another site unasked, which is why it is required")

    def _host_ok(self, host: bytes | None) -> bool:
        if host is None:
            return False
        seen = self._hosts_seen.get(host)
        if seen is None:
            seen = host_allowed(host.decode("latin-1"), self.hosts or frozenset())
            if len(self._hosts_seen) < 64:  # the Host header is the client's to choose: a few are kept
                self._hosts_seen[host] = seen
        return seen

    def limited(self, receive):
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise too_large(self.max_body)
            return message

        return counted
