"""Ollama's API on the gateway (``OLLAMA_HOST=127.0.0.1:8800``, or ``serve --ollama-port 11434``)::

    GET  /                         "Ollama is running" (clients check it)
    GET  /api/version              the Ollama API level spoken
    GET  /api/tags, /api/ps        profiles and tasks; the running servers
    POST /api/show                 one profile or task
    POST /api/chat, /api/generate  routed like /v1/chat/completions (a task or profile name, :latest allowed)
    POST /api/embed, /api/embeddings
    POST /api/pull                 llmctl's pull, with Ollama's progress lines

Requests are translated by :mod:`~llmctl.gateway.ollama`, answers by
:mod:`~llmctl.gateway.ollama_reply`, then sent through the gateway like any other (on-demand
start, fallbacks, limits, metrics). Errors are ``{"error": "message"}``; the guard's and the key
check's (403, 401, 413, 415) stay OpenAI-shaped, as on every path.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..profiles.schema import Profile
from .errors import BadRequest, GatewayHTTPError, UnknownModel, UpstreamFailed
from .guard import error_response as openai_error, json_body
from .ollama import (
    JSON,
    NDJSON,
    OLLAMA_VERSION,
    KeepAlive,
    Upstream,
    chat_request,
    check_num_ctx,
    embed_request,
    generate_request,
    keep_alive,
    loads_only,
    map_options,
    stream_of,
)
from .ollama_models import ps, show, tags
from .ollama_pull import END, Failed, reference, run_pull
from .ollama_reply import StreamTranslator, error_message, load_reply, ndjson, reply, timestamp
from .proxy import ProxyStream
from .routing import Target, prepare_body
from .states import GatewayState

if TYPE_CHECKING:
    from .app import Gateway

#: app.py's handler wrapper: (gateway, name, handler, errors=...) -> the route's endpoint
Endpoint = Callable[..., Callable[[Request], Any]]


def error_response(exc: GatewayHTTPError) -> Response:
    """An error as the Ollama clients read it, ``{"error": "message"}``, with the status and
    headers (retry-after...) of the OpenAI-shaped one."""
    headers = {k: v for k, v in openai_error(exc).headers.items() if k not in ("content-length", "content-type")}
    return JSONResponse({"error": exc.message}, exc.status, headers=headers)


class NdjsonStream:
    """The relay of a server's event stream (:class:`~llmctl.gateway.proxy.ProxyStream`, which
    keeps the lease, the metrics and the disconnect handling) with its events rewritten as
    Ollama's NDJSON lines on their way out."""

    def __init__(self, inner: ProxyStream, translator: StreamTranslator, headers: dict[str, str]) -> None:
        self.inner, self.translator, self.headers = inner, translator, headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        t = self.translator

        async def translated(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message["headers"] if k not in (b"content-type", b"content-length")]
                extra = [(k.encode(), v.encode()) for k, v in self.headers.items()]
                await send({**message, "headers": [*kept, (b"content-type", NDJSON.encode()), *extra]})
            elif message["type"] == "http.response.body":
                more = message.get("more_body", False)
                out = t.feed(message.get("body", b""))
                if not more:
                    out += t.end()
                if out or not more:
                    await send({"type": "http.response.body", "body": out, "more_body": more})
            else:
                await send(message)

        await self.inner(scope, receive, translated)


class OllamaApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    # -- reading a request ----------------------------------------------------------------
    async def _json(self, request: Request) -> JSON:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    def _name(self, model: Any) -> Any:
        """Ollama's ``NAME:latest`` is NAME (unless something is called that)."""
        if isinstance(model, str) and model.endswith(":latest") and model not in self.gw.router.names:
            return model[: -len(":latest")]
        return model

    def _lookup(self, model: Any) -> tuple[str, str]:
        found = self.gw.router.names.get(self._name(model)) if isinstance(model, str) else None
        if found is None:
            known = ", ".join(sorted(set(self.gw.config.tasks) | set(self.gw.config.profiles))) or "none"
            raise UnknownModel(f"model {model!r} not found: no task, profile or served model of that name "
                               f"(known: {known})")
        return found

    # -- generating -----------------------------------------------------------------------
    async def generate(self, request: Request, kind: str) -> Response | NdjsonStream:
        started = time.time()
        req = await self._json(request)
        return await self._forward(request, req, chat_request(req) if kind == "chat" else generate_request(req),
                                   started)

    async def embed(self, request: Request, legacy: bool) -> Response | NdjsonStream:
        started = time.time()
        req = await self._json(request)
        return await self._forward(request, req, embed_request(req, legacy=legacy), started)

    async def _forward(self, request: Request, req: JSON, up: Upstream, started: float) -> Response | NdjsonStream:
        gw = self.gw
        target = gw.router.resolve(self._name(req.get("model")))
        model = req.get("model") or target.model
        keep = keep_alive(req)
        options = req.get("options")
        check_num_ctx(options, gw.config.profiles[target.candidates[0]])
        sampled = up.kind in ("chat", "generate")
        ignored = up.ignored + (map_options(options, gw.config.profiles[target.candidates[0]].engine)[1] if sampled
                                else list(options) if isinstance(options, dict) else [])
        if loads_only(up):
            return await self._load(target, up.kind, model, keep)

        def build(prof: Profile) -> bytes:
            fields = map_options(options, prof.engine)[0] if sampled else {}
            body = prepare_body(up.endpoint, {**up.body, **fields}, target, prof, gw.served_model.get(prof.name))
            return json.dumps(body).encode()

        resp = await gw.dispatch(request, up.endpoint, target, build)
        try:
            self._keep_alive(getattr(request.state, "profile", target.candidates[0]), keep)
            return self._answer(resp, up, model, started, ignored)
        except BaseException:
            if isinstance(resp, ProxyStream):
                await resp.close()
            raise

    def _answer(self, resp: Response | ProxyStream, up: Upstream, model: str, started: float,
                ignored: list[str]) -> Response | NdjsonStream:
        headers = {"x-llmctl-ignored": ", ".join(dict.fromkeys(ignored))} if ignored else {}
        if isinstance(resp, ProxyStream):
            return NdjsonStream(resp, StreamTranslator(up.kind, model, time.time, started), headers)
        headers.update((k.decode(), v.decode()) for k, v in resp.raw_headers if k.startswith(b"x-llmctl-"))
        body = bytes(resp.body)
        if resp.status_code != 200:
            return JSONResponse({"error": error_message(body)}, resp.status_code, headers=headers)
        try:
            answer = json.loads(body)
        except ValueError:
            raise UpstreamFailed(f"{headers.get('x-llmctl-profile')}: the server's answer is not JSON") from None
        now = time.time()
        out = reply(up.kind, answer if isinstance(answer, dict) else {}, model, timestamp(now),
                    int((now - started) * 1e9))
        if up.stream:
            return Response(ndjson(out), headers=headers, media_type=NDJSON)
        return JSONResponse(out, headers=headers)

    # -- keep_alive: load, unload, idle TTL -----------------------------------------------
    async def _load(self, target: Target, kind: str, model: str, keep: KeepAlive | None) -> Response:
        """A request without a prompt: start the model's server (``keep_alive: 0``: stop it)."""
        name = target.candidates[0]
        if keep is not None and keep.seconds == 0:
            self.gw.pool.set_idle_ttl(name, 0.0)
            await self._until_stopped(name)
            reason = "unload"
        else:
            lease = await self.gw.pool.acquire(name)
            lease.release()
            self._keep_alive(name, keep)
            reason = "load"
        return JSONResponse(load_reply(kind, model, timestamp(time.time()), reason))

    def _keep_alive(self, name: str, keep: KeepAlive | None) -> None:
        """Ollama's keep_alive is per request: the last one sets the idle TTL; a request without
        it brings back the profile's own."""
        pool = self.gw.pool
        pool.set_idle_ttl(name, pool.default_idle_ttl(name) if keep is None else keep.seconds)

    async def _until_stopped(self, name: str) -> None:
        """Wait while an idle ``name`` is being stopped (one in use stops when its requests end)."""
        rec = self.gw.pool.records[name]
        deadline = time.monotonic() + rec.profile.stop_timeout + 10
        live = (GatewayState.RUNNING, GatewayState.STOPPING)
        while rec.state in live and not rec.inflight and not rec.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- the lists ------------------------------------------------------------------------
    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def tags(self, request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(tags, self.gw.config, self.gw.paths))

    async def ps(self, request: Request) -> Response:
        rows = self.gw.pool.snapshot()
        return JSONResponse(await asyncio.to_thread(ps, self.gw.config, self.gw.paths, rows, time.time()))

    async def show(self, request: Request) -> Response:
        req = await self._json(request)
        kind, name = self._lookup(req.get("model") or req.get("name"))
        return JSONResponse(await asyncio.to_thread(show, self.gw.config, self.gw.paths, kind, name))

    # -- pull -----------------------------------------------------------------------------
    async def pull(self, request: Request) -> Response:
        req = await self._json(request)
        name = req.get("model") or req.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("the request names no `model` to pull")
        config, paths = self.gw.config, self.gw.paths
        models = {p: prof.model for p, prof in config.profiles.items()}
        models.update({t: config.profiles[task.profile].model for t, task in config.tasks.items()})
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the gateway has stopped meanwhile
                pass

        def work() -> None:
            from ..models.pull import pull
            from ..models.resolve import pullable

            run_pull(lambda: reference(name, models, lambda ref: pullable(ref, paths)),
                     lambda ref, progress: pull(ref, paths=paths, progress=progress), emit)

        loop.run_in_executor(None, work)
        first = await queue.get()
        if isinstance(first, Failed):
            raise first.error
        if not stream_of(req):
            item = first
            while item is not END:
                if isinstance(item, Failed):
                    raise item.error
                item = await queue.get()
            return JSONResponse({"status": "success"})

        async def lines() -> Any:
            item = first
            while item is not END:
                yield ndjson({"error": item.error.message} if isinstance(item, Failed) else item)
                item = await queue.get()

        return StreamingResponse(lines(), media_type=NDJSON)


def ollama_routes(gw: Gateway, endpoint: Endpoint) -> list[Route]:
    """The routes of Ollama's API; ``endpoint`` is app.py's handler wrapper (errors, metrics,
    a client that goes away)."""
    api = OllamaApi(gw)

    def route(path: str, fn: Callable[[Request], Any], method: str = "POST") -> Route:
        return Route(path, endpoint(gw, path, fn, errors=error_response), methods=[method])

    return [
        Route("/", api.root, methods=["GET"]),
        route("/api/version", api.version, "GET"),
        route("/api/tags", api.tags, "GET"),
        route("/api/ps", api.ps, "GET"),
        route("/api/show", api.show),
        route("/api/chat", lambda r: api.generate(r, "chat")),
        route("/api/generate", lambda r: api.generate(r, "generate")),
        route("/api/embed", lambda r: api.embed(r, legacy=False)),
        route("/api/embeddings", lambda r: api.embed(r, legacy=True)),
        route("/api/pull", api.pull),
    ]
