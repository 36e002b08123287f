"""Anthropic's Messages API on the gateway: ``POST /v1/messages`` and
``/v1/messages/count_tokens``, routed like ``/v1/chat/completions`` (the ``model`` is a task,
a profile or a served name; a task's sampling values and system prompt fill in what the client
did not send).

A server whose engine answers the Messages API itself (llama-server, vLLM) gets the request as
is. The request goes through chat completions instead (:mod:`llmctl.gateway.anthropic`) when
the server does not (one that answered ``/v1/messages`` with a plain 404 is remembered as such,
and that request is sent again, translated), or when the task sets a sampling value the
Messages API has no field for (the servers' own endpoint would drop it). Token counting has no
such translation: it needs a server that counts. Errors are Anthropic-shaped.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..inference.request import model_name
from ..profiles.schema import Profile
from . import anthropic as api
from .anthropic import COUNT_TOKENS, MESSAGES
from .anthropic_stream import ChatStream
from .errors import BadRequest, GatewayHTTPError
from .guard import json_body
from .proxy import ProxyStream, Shape
from .routing import CHAT, Target, prepare_body

if TYPE_CHECKING:
    from starlette.requests import Request

    from .app import Gateway

#: engines whose servers answer /v1/messages and /v1/messages/count_tokens themselves
NATIVE = frozenset({"llama-server", "vllm"})


def error_response(exc: GatewayHTTPError) -> Response:
    facts = {k: v for k, v in exc.facts.items() if k in ("profile", "task", "state")}
    headers = {"retry-after": "1"} if exc.status == 429 else None
    return JSONResponse(api.error_body(exc.status, exc.message, facts), exc.status, headers=headers)


async def read_json(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    try:
        return api.check(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


class MessagesAPI:
    """The two endpoints of one gateway, and what it learned of its servers."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.native: dict[str, bool] = {}  #: profile -> its server answers /v1/messages (else: engine's default)

    def routes(self, endpoint: Callable) -> list[Route]:
        """The routes, each through ``endpoint`` (app._endpoint) with Anthropic-shaped errors."""
        return [Route(MESSAGES, endpoint(self.gw, MESSAGES, self.messages, error_response), methods=["POST"]),
                Route(COUNT_TOKENS, endpoint(self.gw, COUNT_TOKENS, self.count_tokens, error_response),
                      methods=["POST"])]

    def speaks(self, prof: Profile) -> bool:
        return self.native.get(prof.name, prof.engine in NATIVE)

    async def messages(self, request: Request) -> Response | ProxyStream:
        body = await read_json(request)
        target = self.gw.router.resolve(body.get("model"))
        for _attempt in (1, 2):  # twice when a server turns out not to speak it
            missing: list[str] = []
            resp = await self.gw.dispatch(request, MESSAGES, target, self._plan(body, target, missing))
            if not missing:
                break
        return resp

    def _plan(self, body: dict[str, Any], target: Target, missing: list[str]) -> Callable[[Profile], Shape]:
        """The per-profile request: native when the server speaks it and nothing of the task is
        lost, else translated (translated up front, so a request that cannot be is a 400)."""
        profiles = [self.gw.config.profiles[name] for name in target.candidates]
        translate_all = api.needs_chat(target.params)
        chat = None
        if translate_all or not all(self.speaks(p) for p in profiles):
            try:
                chat = api.to_chat(body)
            except api.Untranslatable as exc:
                raise BadRequest(str(exc)) from None

        def build(prof: Profile) -> Shape:
            served = self.gw.served_model.get(prof.name)
            if chat is None or (self.speaks(prof) and not translate_all):
                out = api.fill(body, target.params)
                out["model"] = served or model_name(prof)
                return Shape(MESSAGES, json.dumps(out).encode(), self._native_answer(prof, missing),
                             error_event=api.error_event)
            up = prepare_body(CHAT, chat, target, prof, served)
            stops = up.get("stop") if isinstance(up.get("stop"), list) else None
            return Shape(CHAT, json.dumps(up).encode(), lambda status, raw: api.answer(status, raw, stops),
                         lambda: ChatStream(stops), api.error_event)

        return build

    def _native_answer(self, prof: Profile, missing: list[str]) -> Callable[[int, bytes], bytes]:
        def answer(status: int, raw: bytes) -> bytes:
            if status == 404 and not api.is_anthropic_error(raw):  # no such route: an older server
                self.native[prof.name] = False
                missing.append(prof.name)
            return api.error_from(status, raw)

        return answer

    async def count_tokens(self, request: Request) -> Response | ProxyStream:
        body = await read_json(request)
        target = self.gw.router.resolve(body.get("model"))
        profiles = [self.gw.config.profiles[name] for name in target.candidates]
        if not any(self.speaks(p) for p in profiles):
            raise BadRequest(f"{_who(target)} has no server that counts tokens for the Messages API "
                             f"(/v1/messages/count_tokens); llama-server and vLLM do",
                             profile=target.candidates[0])

        def build(prof: Profile) -> Shape:
            if not self.speaks(prof):  # skipped: the next candidate is tried
                raise BadRequest(f"{prof.name}: its server does not count tokens for the Messages API")
            out = api.fill(body, target.params, sampling=False)
            out["model"] = self.gw.served_model.get(prof.name) or model_name(prof)
            return Shape(COUNT_TOKENS, json.dumps(out).encode(), api.error_from)

        return await self.gw.dispatch(request, COUNT_TOKENS, target, build)


def _who(target: Target) -> str:
    return f"task {target.task.name!r}" if target.task else f"profile {target.candidates[0]!r}"
