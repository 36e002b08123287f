"""The gateway as an ASGI app (Starlette): :func:`build_app` is the whole core, usable without
the CLI (run it with any ASGI server, or with :func:`llmctl.gateway.server.serve`).

Routes::

    POST /v1/chat/completions, /v1/completions, /v1/embeddings   routed by the body's `model`
    POST /v1/messages, /v1/messages/count_tokens   Anthropic's Messages API, routed alike (messages.py)
    GET  /v1/models            tasks and profiles, with each server's state
    GET  /health               {"status": "ok"} (no key needed)
    GET  /metrics              Prometheus text
    ANY  /upstream/NAME/PATH   passed to profile NAME's server as is (its /props, /slots, /tokenize...)
    /api/chat, /api/tags...    Ollama's API, routed alike (ollama_api.py)

Every answer from a server carries ``x-llmctl-profile`` (and ``x-llmctl-task``); errors are
OpenAI-shaped: ``{"error": {"message", "type", "code"}}`` with 400/401/403/404/413/415/429/502/503/504
(403, 413 and 415: the checks in :mod:`llmctl.gateway.guard`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import UsageError
from ..inference.params import Params
from ..inference.request import auth_headers
from ..paths import Paths
from ..profiles.schema import Config, Profile
from .config import GatewayConfig
from .control import ServerControl, SupervisorControl
from .endpoint import UPSTREAM_METHODS, HotPaths, KeyCheck, RawResponse, endpoint, upstream_path
from .errors import Busy, Forbidden, GatewayHTTPError, NotRunning, Unavailable, UpstreamFailed
from .guard import Guard, json_body
from .messages import MESSAGES, MessagesAPI
from .metrics import Metrics
from .ollama_api import ollama_routes
from .pool import Pool
from .proxy import (
    BeforeFirstByte,
    ProxyStream,
    Shape,
    Upstreams,
    read_body,
    relay_headers,
    usage_from_body,
    usage_from_sse,
)
from .records import Lease
from .routing import CHAT, COMPLETIONS, EMBEDDINGS, Router, Target, check_body, prepare_body, served_names
from .security import KEY_ENV, allowed_hosts, check_binding
from .upstream import Response as UpstreamResponse, UpstreamError

log = logging.getLogger("llmctl.gateway")
Build = Callable[[Profile], "bytes | Shape | None"]  #: a request's body (or Shape) for a profile


def resolve_budget(config: Config, gw: GatewayConfig) -> int | None:
    """``serve --vram-budget``, else ``defaults.vram_budget``, else no budget."""
    if gw.vram_budget is not None:
        return gw.vram_budget
    if config.defaults.vram_budget:
        from ..gpu.placement import budget_bytes, is_free

        if is_free(config.defaults.vram_budget):  # the GPUs' free memory now, with what ours hold
            from ..supervise.control import Supervisor

            caps = Supervisor(config).gpu_capacity()
            if not caps:
                log.warning("vram_budget: free, but no GPU tool (nvidia-smi, rocm-smi) answered: no budget")
            return sum(caps.values()) or None
        try:
            return budget_bytes(config.defaults.vram_budget)
        except ValueError as exc:
            raise UsageError(f"defaults.vram_budget: {exc}") from None
    return None


class Gateway:
    """One gateway: the router, the pool (state owner), upstream clients and metrics."""

    def __init__(self, config: Config, gw: GatewayConfig, *, paths: Paths | None = None,
                 control: ServerControl | None = None) -> None:
        self.config, self.gw = config, gw
        self.paths = paths or Paths.from_env()
        self.router = Router(config)
        self.metrics = Metrics()
        insecure = frozenset(n for n, p in config.profiles.items() if not p.verify)  # a remote's `verify: false`
        self.upstreams = Upstreams(gw.upstream_timeout, insecure)
        self.budget = resolve_budget(config, gw)
        self.pool = Pool(config, gw, control or SupervisorControl(config, self.paths), budget=self.budget,
                         metrics=self.metrics, on_stopped=self._stopped)
        self.served_model: dict[str, str] = {}  #: vLLM: the name the running server answers to
        self.started_wall = int(time.time())
        self.stopped_on_exit: list[str] = []
        self.anthropic = MessagesAPI(self)

    # -- life -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        await self.pool.start(self._estimates if self.budget is not None else None)
        try:
            yield
        finally:
            self.stopped_on_exit = await self.pool.shutdown(self.gw.stop_on_exit)
            await self.upstreams.aclose()

    def _estimates(self) -> dict[str, int]:
        """Blocking (a worker thread): the GPU memory each profile is expected to take."""
        from ..gpu.estimate import estimate_profile, format_size
        from ..gpu.learned import lookup

        gpu_total = self.gw.gpu_total
        if gpu_total is None and any(p.engine == "vllm" for p in self.config.profiles.values()):
            from ..gpu.probe import MIB, probe  # vLLM takes a share of the GPU: how big is it?

            sizes = [g.total_mib for g in probe().gpus if g.total_mib]
            gpu_total = min(sizes) * MIB if sizes else None
        out = {}
        for name, prof in self.config.profiles.items():
            est = estimate_profile(prof, self.paths, gpu_total=gpu_total)
            seen = lookup(self.paths, prof) if prof.backend != "cpu" else None
            if seen is not None:  # what it took when it last ran, in place of the estimate
                est.total, est.method = seen, f"measured; estimate {format_size(est.total or 0)}"
            out[name] = est.total or 0
            if est.total is None:
                log.warning("%s: GPU memory unknown (%s): the budget cannot account for it, so it is not "
                            "held back or evicted for it", name, "; ".join(est.notes))
            else:
                log.info("%s: expects %s of GPU memory (%s)", name, format_size(est.total), est.method)
        return out

    def _stopped(self, name: str) -> None:
        self.upstreams.drop(name)
        self.served_model.pop(name, None)

    # -- forwarding -----------------------------------------------------------------------
    async def dispatch(self, request: Request, endpoint: str, target: Target, build: Build, *, method: str = "POST",
                       path: str | None = None) -> Response | ProxyStream:
        """Try the target's candidates in order; the first that answers is relayed.

        A candidate not running is started (and waited for). One that cannot be started or
        reached (before its first byte) passes the request to the next. One at its concurrency
        limit is skipped for running fallbacks only; if none takes it: 429."""
        t0 = time.monotonic()
        deadline = t0 + self.gw.wait_timeout
        request.state.model = target.model  #: what the client asked for (metrics' recent requests)
        errors: list[GatewayHTTPError] = []
        busy: Busy | None = None
        for i, name in enumerate(target.candidates):
            prof = self.config.profiles.get(name)
            if prof is None or name not in self.pool.records:  # removed by a reload while the request walked
                continue  # its chain: as if that fallback were not there
            try:
                lease = await self.pool.acquire(name, start=busy is None, deadline=deadline)
            except Busy as exc:
                busy = busy or exc
                continue
            except NotRunning:
                continue
            except Unavailable as exc:
                errors.append(exc)
                continue
            request.state.profile = name
            try:
                resp, shape = await self._send(request, prof, method, build, path or endpoint, path is not None)
            except BeforeFirstByte as exc:
                lease.release()
                self.pool.suspect(name)
                errors.append(Unavailable(f"{name}: {exc}", profile=name))
                more = "; trying the next profile" if i + 1 < len(target.candidates) else ""
                log.warning("%s: %s%s", name, exc, more)
                continue
            except UsageError as exc:  # the profile's api_key_env is not set
                lease.release()
                errors.append(Unavailable(exc.message, profile=name))
                continue
            except BaseException:
                lease.release()
                raise
            if i > 0:
                self.metrics.fallback(name)
            return await self._relay(resp, lease, endpoint, target, t0, shape)
        if busy is not None:
            raise busy
        what = f"task {target.task.name!r}" if target.task else f"profile {target.candidates[0]!r}"
        reasons = "; ".join(e.message for e in errors) or "nothing could serve it"
        raise Unavailable(f"no server could take the request for {what}: {reasons}",
                          profile=target.candidates[0], task=target.task.name if target.task else None)

    async def _send(self, request: Request, prof: Profile, method: str, build: Build, path: str,
                    query: bool) -> tuple[UpstreamResponse, Shape]:
        """Send what ``build`` makes for ``prof`` (to ``path``, unless it says another; ``query``:
        with the client's query string) to its server; the answer once its headers are in."""
        headers = [("content-type", request.headers.get("content-type", "application/json")),
                   ("accept", request.headers.get("accept", "application/json")), *auth_headers(prof).items()]
        if prof.engine == "vllm" and not prof.served_model_name and prof.name not in self.served_model:
            await self._ask_served_model(prof, headers)  # before build: the body names that model
        shape = Shape.of(build(prof), path)
        where = shape.path
        qs = request.scope.get("query_string")
        if qs and query:
            where += "?" + qs.decode("latin-1")
        return await self.upstreams.open(prof.name, method, prof.url, where, headers, shape.body), shape

    async def _relay(self, resp: UpstreamResponse, lease: Lease, endpoint: str, target: Target, t0: float,
                     shape: Shape) -> Response | ProxyStream:
        name = lease.name
        self.metrics.first_byte(name, endpoint, time.monotonic() - t0)
        extra = [(b"x-llmctl-profile", name.encode())]
        if target.task is not None:
            extra.append((b"x-llmctl-task", target.task.name.encode()))
        if resp.status_code in (401, 403):  # our key for that server was refused: not the client's fault
            lease.release()
            resp.close()
            api = lease.record.profile.api_key_env  # (the profile may have left the files since)
            raise UpstreamFailed(f"{name}: the server refused the gateway's key (HTTP {resp.status_code}); check "
                                 f"the profile's api_key_env ({api or 'not set'})", profile=name)
        ctype = resp.content_type
        if resp.status_code == 200 and ctype.startswith("text/event-stream"):
            def on_end(outcome: str, tail: bytes) -> None:
                code = {"ok": 200, "upstream_error": 502, "client_gone": 499}[outcome]
                self.metrics.request(name, endpoint, code, time.monotonic() - t0, target.model)
                self.metrics.usage(name, *usage_from_sse(tail))
                if outcome == "upstream_error":
                    self.pool.suspect(name)

            return ProxyStream(resp, lease, relay_headers(resp, extra), on_end, shape)
        try:
            body = await read_body(resp)
        except Exception as exc:  # noqa: BLE001 - the server broke off its answer
            self.pool.suspect(name)
            raise UpstreamFailed(f"{name}: the server stopped in the middle of its answer "
                                 f"({exc or type(exc).__name__})", profile=name) from None
        finally:
            lease.release()
        self.metrics.request(name, endpoint, resp.status_code, time.monotonic() - t0, target.model)
        if ctype.startswith("application/json") and endpoint in (CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES):
            self.metrics.usage(name, *usage_from_body(body))  # read from the end: no parse of a whole body
        if shape.answer is not None:
            body = shape.answer(resp.status_code, body)
        return RawResponse(body, resp.status_code, relay_headers(resp, extra))

    async def _ask_served_model(self, prof: Profile, headers: list[tuple[str, str]]) -> None:
        """vLLM answers only to the name it serves; ask it once per start."""
        try:
            resp = await self.upstreams.open(prof.name, "GET", prof.url, "/v1/models", headers, None)
            data = json.loads(await read_body(resp))
            ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
            if ids and ids[0]:
                self.served_model[prof.name] = ids[0]
        except (BeforeFirstByte, UpstreamError, ValueError, AttributeError):
            pass

    # -- endpoints ------------------------------------------------------------------------
    async def openai(self, request: Request, endpoint: str) -> Response | ProxyStream:
        body = await json_body(request)
        body = check_body(endpoint, body)
        request.state.model = body.get("model")  # shown even when it names nothing known (404)
        target = self.router.resolve(body.get("model"))

        def build(prof: Profile) -> bytes:
            return json.dumps(prepare_body(endpoint, body, target, prof, self.served_model.get(prof.name))).encode()

        return await self.dispatch(request, endpoint, target, build)

    async def upstream(self, request: Request) -> Response | ProxyStream:
        name, rest = request.path_params["name"], request.path_params["path"]
        request.state.model = name
        kind_name = self.router.names.get(name)
        if kind_name is None or kind_name[0] != "profile":
            from .errors import UnknownModel

            raise UnknownModel(f"no profile named {name!r} (known: {', '.join(self.config.profiles) or 'none'})")
        profile = kind_name[1]
        if self.config.profiles[profile].api_key_env and not self.gw.api_key:
            raise Forbidden(f"{profile}'s server has its own API key, which the gateway adds only to requests it "
                            f"has authenticated, and this gateway has no key: give it one (${KEY_ENV} or "
                            f"`llmctl serve --api-key-file`) and send `Authorization: Bearer KEY`", profile=profile)
        content = await request.body()
        target = Target(name, None, [profile], Params())
        return await self.dispatch(request, "/upstream", target, lambda prof: content or None,
                                   method=request.method, path=upstream_path(request.scope, rest))

    def models(self) -> dict:
        states = {r["name"]: r for r in self.pool.snapshot()}
        data = []
        for t in self.config.tasks.values():
            data.append({"id": t.name, "object": "model", "created": self.started_wall, "owned_by": "llmctl",
                         "llmctl": {"kind": "task", "profile": t.profile, "fallback": list(t.fallback),
                                    "state": states[t.profile]["state"], "description": t.description}})
        for p in self.config.profiles.values():
            s = states[p.name]
            data.append({"id": p.name, "object": "model", "created": self.started_wall, "owned_by": "llmctl",
                         "llmctl": {"kind": "profile", "engine": p.engine, "model": p.model, "state": s["state"],
                                    "inflight": s["inflight"], "waiting": s["waiting"], "group": p.group,
                                    "idle_ttl": s["idle_ttl"], "idle_s": s["idle_s"],
                                    "started_by_gateway": s["started_by_gateway"], "reason": s["reason"],
                                    "served_names": served_names(p), "description": p.description}})
        return {"object": "list", "data": data}


def build_app(config: Config, gateway: GatewayConfig | None = None, *, paths: Paths | None = None,
              control: ServerControl | None = None) -> Starlette:
    """The gateway for ``config`` as a Starlette app; ``app.state.gateway`` is the
    :class:`Gateway`. Raises UsageError when it would bind beyond loopback without a key."""
    gw_cfg = gateway or GatewayConfig()
    check_binding(gw_cfg.host, gw_cfg.api_key)
    gw = Gateway(config, gw_cfg, paths=paths, control=control)

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request):
        return PlainTextResponse(gw.metrics.render(gw.pool.snapshot()),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(request: Request):
        return JSONResponse(gw.models())

    posts = {path: endpoint(gw, path, lambda request, path=path: gw.openai(request, path))
             for path in (CHAT, COMPLETIONS, EMBEDDINGS)}
    upstream = endpoint(gw, "/upstream", gw.upstream)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        *(Route(path, handler, methods=["POST"]) for path, handler in posts.items()),
        *gw.anthropic.routes(endpoint),
        Route("/upstream/{name}/{path:path}", upstream, methods=sorted(UPSTREAM_METHODS)),
    ]
    routes += ollama_routes(gw, endpoint)
    from .ui import ui_routes  # the dashboard (/ui)
    routes += ui_routes(gw)
    middleware = [Middleware(Guard, hosts=allowed_hosts(gw_cfg.host, gw_cfg.allow_hosts), max_body=gw_cfg.max_body)]
    if gw_cfg.api_key:
        middleware.append(Middleware(KeyCheck, key=gw_cfg.api_key))
    middleware.append(Middleware(HotPaths, posts=posts, upstream=upstream))  # the same handlers, found at once
    app = Starlette(routes=routes, middleware=middleware, lifespan=gw.lifespan)
    app.state.gateway = gw
    return app
