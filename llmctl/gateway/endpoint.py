"""The gateway's request handling around its endpoints (app.py builds the app from these):
:func:`endpoint` wraps a handler (errors as answers, metrics, a client that goes away),
:class:`KeyCheck` asks for the gateway's key, and :class:`HotPaths` sends the paths that carry
model traffic (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/upstream/NAME/PATH``) straight to their handlers, past Starlette's router (which tries every
route's pattern in turn) and its exception layer: a plain ASGI dispatch, after the same checks
(:class:`~llmctl.gateway.guard.Guard`, :class:`KeyCheck`) as every other path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Protocol

from starlette.requests import Request
from starlette.responses import Response

from ..errors import LlmctlError
from .errors import BadRequest, GatewayHTTPError, Unauthorized, UpstreamFailed
from .guard import error_response
from .metrics import Metrics
from .proxy import wait_disconnect
from .security import OPEN_PATHS, authorized

log = logging.getLogger("llmctl.gateway")
UPSTREAM = "/upstream/"
UPSTREAM_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})


class Gateway(Protocol):
    """What :func:`endpoint` needs of app.Gateway: where requests are counted."""

    metrics: Metrics


def endpoint(gw: Gateway, name: str, fn: Callable, errors: Callable = error_response) -> Callable:
    """The handler around ``fn``: errors become OpenAI-shaped answers, and a client that goes
    away while its request waits (for a start, a swap) or is answered (non-streaming) cancels
    it, which closes the upstream request too."""

    async def handle(request: Request):
        t0 = time.monotonic()
        try:
            await request.body()  # read it all: from here on, receive() only reports a disconnect
            done, result = await _unless_gone(request, fn)
            if not done:
                gw.metrics.request(getattr(request.state, "profile", None), name, 499, time.monotonic() - t0,
                                   _asked(request))
                return Response(status_code=499)
            return result
        except RecursionError:  # a body that parsed, nested just below the limit, and went deeper
            gw.metrics.request(None, name, 400, time.monotonic() - t0, _asked(request))
            return errors(BadRequest("the request body is nested too deeply"))
        except GatewayHTTPError as exc:
            profile = exc.facts.get("profile")
            gw.metrics.request(profile if isinstance(profile, str) else None, name, exc.status, time.monotonic() - t0,
                               _asked(request))
            return errors(exc)
        except LlmctlError as exc:  # anything else llmctl raised: the server side failed
            log.warning("%s", exc.message)
            err = UpstreamFailed(exc.message)
            gw.metrics.request(None, name, 502, time.monotonic() - t0, _asked(request))
            return errors(err)

    return handle


def _asked(request: Request) -> Any:
    """The model the client asked for, where the handler read it (``request.state.model``)."""
    return getattr(request.state, "model", None)


async def _unless_gone(request: Request, fn: Callable) -> tuple[bool, Any]:
    """(True, ``await fn(request)``), run in this task while one watcher task waits for the
    client's disconnect; (False, None) when the client went away first (``fn`` is cancelled)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await wait_disconnect(request.receive)
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return True, await fn(request)
    except asyncio.CancelledError:
        if not gone:
            raise
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the cancellation was ours, and is handled
        if uncancel is not None:
            uncancel()
        return False, None
    finally:
        watcher.cancel()


class KeyCheck:
    """ASGI middleware: every path but /health needs ``Authorization: Bearer KEY`` or ``x-api-key: KEY``."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not authorized(scope["headers"], self.key):
            err = Unauthorized("this gateway needs an API key: send `Authorization: Bearer KEY` or `x-api-key: KEY` "
                               "(OpenAI clients: api_key=KEY)")
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HotPaths:
    """ASGI middleware, the innermost: ``posts`` (path -> handler, for POST) and ``/upstream/``
    paths (to ``upstream``) are handled here; anything else (another method too) goes on to
    Starlette's router. A handler takes a Request and returns the response to send."""

    def __init__(self, app, posts: dict[str, Callable], upstream: Callable) -> None:
        self.app, self.posts, self.upstream = app, posts, upstream

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            handler = self.posts.get(path) if method == "POST" else None
            if handler is None and path.startswith(UPSTREAM) and method in UPSTREAM_METHODS:
                name, sep, rest = path[len(UPSTREAM):].partition("/")
                if name and sep:
                    scope["path_params"] = {"name": name, "path": rest}
                    handler = self.upstream
            if handler is not None:
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RawResponse(Response):
    """A body relayed with the headers given (as bytes, lower-case) and its length."""

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body, self.status_code, self.background = body, status, None
        bodiless = status < 200 or status in (204, 304)
        self.raw_headers = headers if bodiless else [(b"content-length", str(len(body)).encode()), *headers]


def upstream_path(scope, rest: str) -> str:
    """The path after /upstream/NAME as the client sent it (still percent-encoded)."""
    raw = scope.get("raw_path")
    parts = raw.split(b"/", 3) if isinstance(raw, bytes) and raw.startswith(b"/upstream/") else []
    if len(parts) == 4:
        return "/" + parts[3].decode("latin-1")
    from urllib.parse import quote

    return "/" + quote(rest)
