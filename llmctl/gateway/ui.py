"""The web dashboard at ``/ui``: plain HTML, CSS and JavaScript shipped in the package
(``llmctl/gateway/static``; no build step, no library), and the small JSON API it polls.

    GET  /ui                          the page (and /ui/dashboard.js, /ui/dashboard.css)
    GET  /ui/api/state                every profile (state, model, port, uptime, restarts, VRAM,
                                      in-flight requests, idle-TTL countdown) and recent requests
    POST /ui/api/profiles/NAME/start  start a server through the pool (a JSON body, may be {})
    POST /ui/api/profiles/NAME/stop   stop it
    GET  /ui/api/logs/NAME?kb=N       its log as server-sent events: the last N KiB, then live

The page and its two files carry no data and need no key; every ``/ui/api`` path is checked like
the gateway's other endpoints (its key when it has one, its Host and content-type rules). The
page asks for the key when the API answers 401, keeps it in the tab's session storage and sends
it as ``Authorization: Bearer KEY``; it reads the log with ``fetch`` (EventSource cannot send a
header). Answers carry a Content-Security-Policy that allows the page's own files only."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import ui_actions
from .errors import GatewayHTTPError, UnknownModel
from .guard import error_response
from .ui_logs import DEFAULT_KB, MAX_KB, follow
from .ui_state import StateReader

if TYPE_CHECKING:
    from .app import Gateway

#: the page and its files: (path, file in llmctl/gateway/static, content type); no key needed
PAGES = (("/ui", "dashboard.html", "text/html; charset=utf-8"),
         ("/ui/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8"),
         ("/ui/dashboard.css", "dashboard.css", "text/css; charset=utf-8"))
OPEN_UI_PATHS = tuple(p for p, _, _ in PAGES)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _asset(file: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(file).read_bytes()


def _page(file: str, media_type: str) -> Callable:
    async def page(request: Request) -> Response:
        return Response(_asset(file), media_type=media_type, headers=SECURITY_HEADERS)

    return page


def _api(fn: Callable) -> Callable:
    """``fn`` with its errors answered as the gateway answers them (not counted as requests to
    models: the page's polls stay out of the metrics and the recent requests)."""

    async def handle(request: Request) -> Response:
        try:
            return await fn(request)
        except GatewayHTTPError as exc:
            return error_response(exc)

    return handle


def ui_routes(gw: Gateway) -> list[Route]:
    """The dashboard's routes."""
    reader = StateReader(gw)

    def profile_of(request: Request) -> str:
        name = request.path_params["name"]
        if name not in gw.config.profiles:
            raise UnknownModel(f"no profile named {name!r} (known: {', '.join(gw.config.profiles) or 'none'})")
        return name

    async def state(request: Request) -> Response:
        return JSONResponse(await reader.state(), headers=SECURITY_HEADERS)

    def action(do: Callable) -> Callable:
        async def act(request: Request) -> Response:
            ui_actions.check_origin(request.headers.get("origin"), request.headers.get("host"))
            name = profile_of(request)
            return JSONResponse({"profile": name, "message": do(gw.pool, name)}, 202, headers=SECURITY_HEADERS)

        return act

    async def logs(request: Request) -> Response:
        name = profile_of(request)
        kb = request.query_params.get("kb", "")
        size = min(int(kb), MAX_KB) if kb.isdigit() else DEFAULT_KB
        server = getattr(request.app.state, "server", None)  # uvicorn's (llmctl.gateway.server)

        def stopping() -> bool:
            return bool(getattr(server, "should_exit", False))

        return StreamingResponse(follow(gw.paths.log_file(name), size, stopping), media_type="text/event-stream",
                                 headers={**SECURITY_HEADERS, "x-accel-buffering": "no"})

    routes = [Route(path, _page(file, ctype), methods=["GET"]) for path, file, ctype in PAGES]
    routes += [
        Route("/ui/api/state", _api(state), methods=["GET"]),
        Route("/ui/api/profiles/{name}/start", _api(action(ui_actions.start)), methods=["POST"]),
        Route("/ui/api/profiles/{name}/stop", _api(action(ui_actions.stop)), methods=["POST"]),
        Route("/ui/api/logs/{name}", _api(logs), methods=["GET"]),
    ]
    return routes
