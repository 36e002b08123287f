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
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if self.hosts is not None and not host_allowed(host, self.hosts):
            raise Forbidden(f"Host {host!r} is not one this gateway answers to: it listens on loopback and answers "
                            f"localhost, 127.0.0.1 and [::1] only (a web page cannot reach it by another name); "
                            f"to allow a name, use `llmctl serve --allow-host NAME`")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise too_large(self.max_body)
        has_body = (length.isdigit() and int(length) > 0) or "transfer-encoding" in headers
        upstream = scope["path"].startswith("/upstream/")
        if scope["method"] in BODY_METHODS and (has_body or not upstream) \
                and not is_json_type(headers.get("content-type")):
            raise UnsupportedMediaType(f"the request body must be JSON sent with `Content-Type: application/json` "
                                       f"(got {headers.get('content-type') or 'none'}); web pages cannot send that "
                                       f"type to another site unasked, which is why it is required")

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
