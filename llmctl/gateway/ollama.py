"""Ollama's API as the OpenAI-style requests the gateway sends its servers. Pure: dicts in,
dicts out; no I/O, no clock. The answers are translated back by :mod:`~llmctl.gateway.ollama_reply`,
the model lists come from :mod:`~llmctl.gateway.ollama_models`, pulls from
:mod:`~llmctl.gateway.ollama_pull`; the HTTP side is :mod:`~llmctl.gateway.ollama_api`.

Requests::

    /api/chat                -> /v1/chat/completions   messages (images as image_url parts, tool calls
                                                        with JSON-string arguments), tools, format ->
                                                        response_format, think -> enable_thinking
    /api/generate            -> /v1/chat/completions   system, then the prompt as the user's message
    /api/generate, raw: true -> /v1/completions        the prompt as it is
    /api/embed, /api/embeddings -> /v1/embeddings

``options``: num_predict -> max_tokens (negative: no limit); temperature, top_k, top_p, min_p, seed,
stop, repeat_penalty (vLLM: repetition_penalty), presence_penalty, frequency_penalty, mirostat,
mirostat_tau, mirostat_eta as they are; llama-server only: typical_p, repeat_last_n, num_keep ->
n_keep. The rest are server settings a request cannot change (num_ctx, num_gpu, num_thread...):
``num_ctx`` over the profile's context is refused, and every option not applied is named in the
answer's ``x-llmctl-ignored`` header. ``keep_alive`` (seconds, or a duration such as ``"5m"``)
becomes that profile's idle TTL: 0 stops it once idle, a negative value never.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..inference.params import Params, coerce, request_fields
from ..profiles.schema import Profile
from .errors import BadRequest
from .routing import CHAT, COMPLETIONS, EMBEDDINGS

JSON = dict[str, Any]

#: the Ollama API level answered by /api/version (clients compare it before using newer fields)
OLLAMA_VERSION = "0.9.0"
NDJSON = "application/x-ndjson"

#: Ollama option -> llmctl sampling key (spelled for each engine by inference.params.SAMPLING)
SAMPLING_OPTIONS = {"num_predict": "max_tokens", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
                    "min_p": "min_p", "seed": "seed", "stop": "stop", "repeat_penalty": "repeat_penalty",
                    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                    "mirostat": "mirostat", "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta"}
#: Ollama option -> llama-server request field, for fields vLLM does not have
LLAMA_ONLY_OPTIONS = {"typical_p": "typical_p", "repeat_last_n": "repeat_last_n", "num_keep": "n_keep"}
#: finish_reason -> Ollama's done_reason
DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


@dataclass
class Upstream:
    """An Ollama request as the request the gateway sends: the endpoint, the body (without the
    sampling options, which are spelled per profile by :func:`map_options`), whether the client
    wants a stream, and the request fields that were not applied."""

    kind: str  #: chat | generate | embed | embeddings
    endpoint: str
    body: JSON
    stream: bool
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class KeepAlive:
    """A request's ``keep_alive``: idle seconds before its server is stopped (None: never)."""

    seconds: float | None


# -- options ----------------------------------------------------------------------------------
def map_options(options: Any, engine: str) -> tuple[JSON, list[str]]:
    """The upstream body fields for Ollama's ``options`` on a server of ``engine``, and the names
    of the options not applied (server settings, or fields that engine lacks)."""
    if options is None:
        return {}, []
    if not isinstance(options, dict):
        raise BadRequest("`options` must be an object")
    sampling: JSON = {}
    fields: JSON = {}
    ignored: list[str] = []
    for key, value in options.items():
        if value is None:
            continue
        if key == "num_predict" and _number(key, value) < 0:
            fields["max_tokens"] = None  # -1: no limit, -2: until the context is full
        elif key in SAMPLING_OPTIONS:
            try:
                sampling[SAMPLING_OPTIONS[key]] = coerce(SAMPLING_OPTIONS[key], value)
            except UsageError:
                raise BadRequest(f"options.{key}: {value!r} is not a valid value") from None
        elif key in LLAMA_ONLY_OPTIONS and engine != "vllm":
            fields[LLAMA_ONLY_OPTIONS[key]] = _number(key, value)
        else:
            ignored.append(key)
    spelled, dropped = request_fields(Params(sampling=sampling), engine)
    ignored += [k for k, v in SAMPLING_OPTIONS.items() if v in dropped]
    return {**spelled, **fields}, ignored


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"options.{key}: {value!r} is not a number")
    return value


def context_size(profile: Profile) -> int | None:
    """The context the profile's server is started with, when the profile says (else the model's)."""
    ctx = profile.max_model_len if profile.engine == "vllm" else profile.ctx_size
    return ctx or None


def check_num_ctx(options: Any, profile: Profile) -> None:
    """``num_ctx`` is a server setting: a request may ask for at most the profile's context."""
    n = options.get("num_ctx") if isinstance(options, dict) else None
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise BadRequest(f"options.num_ctx: {n!r} is not a whole number")
    ctx = context_size(profile)
    if ctx is not None and n > ctx:
        key = "max_model_len" if profile.engine == "vllm" else "ctx_size"
        raise BadRequest(f"options.num_ctx {n} is more than profile {profile.name!r} is started with ({key}: "
                         f"{ctx}, {profile.where(key)}); the context is a server setting: raise {key} in the "
                         f"profile, or ask for num_ctx {ctx} or less")


def keep_alive(req: JSON) -> KeepAlive | None:
    """The request's ``keep_alive`` (None: it has none). Seconds as a number or a numeric string,
    or a duration such as ``"5m"``, ``"1h30m"``, ``"300ms"``; negative: never stopped."""
    value = req.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"keep_alive: {value!r} is not a duration (e.g. 300, \"5m\", \"1h\", 0, -1)")
    if isinstance(value, str):
        seconds = _duration(value)
    else:
        seconds = float(value)
    return KeepAlive(None if seconds < 0 else seconds)


def _duration(text: str) -> float:
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    sign, body = (-1.0, s[1:]) if s.startswith("-") else (1.0, s.lstrip("+"))
    parts = _DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise BadRequest(f"keep_alive: {text!r} is not a duration (e.g. 300, \"5m\", \"1h\", 0, -1)")
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


# -- requests ---------------------------------------------------------------------------------
def chat_request(req: JSON) -> Upstream:
    body: JSON = {"messages": chat_messages(req.get("messages") or [])}
    if req.get("tools"):
        body["tools"] = req["tools"]
    _common(req, body)
    return Upstream("chat", CHAT, body, stream_of(req), _unused(req, ("images",)))


def generate_request(req: JSON) -> Upstream:
    prompt = req.get("prompt") or ""
    if not isinstance(prompt, str):
        raise BadRequest("`prompt` must be a string")
    ignored = _unused(req, ("context", "template", "suffix"))
    if req.get("raw"):
        return Upstream("generate", COMPLETIONS, {"prompt": prompt, **_common(req, {})}, stream_of(req),
                        ignored + _unused(req, ("system", "images")))
    messages: list[JSON] = []
    if req.get("system"):
        messages.append({"role": "system", "content": str(req["system"])})
    messages.append({"role": "user", "content": _content(prompt, req.get("images"))})
    return Upstream("generate", CHAT, _common(req, {"messages": messages}), stream_of(req), ignored)


def embed_request(req: JSON, *, legacy: bool = False) -> Upstream:
    """``/api/embed`` (``input``: a string or a list of them) or the older ``/api/embeddings``
    (``prompt``: one string)."""
    text = req.get("prompt") if legacy else req.get("input")
    ok = isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text))
    if not ok or (legacy and not isinstance(text, str)):
        raise BadRequest(f"`{'prompt' if legacy else 'input'}` must be "
                         f"{'a string' if legacy else 'a string or a list of strings'}")
    body: JSON = {"input": text}
    if req.get("dimensions") is not None:
        body["dimensions"] = req["dimensions"]
    return Upstream("embeddings" if legacy else "embed", EMBEDDINGS, body, False, _unused(req, ("truncate",)))


def loads_only(up: Upstream) -> bool:
    """A chat without messages or a generate without a prompt: Ollama's way to load (or, with
    ``keep_alive: 0``, unload) a model."""
    if up.kind == "chat":
        return not up.body["messages"]
    if up.kind == "generate":
        prompt = up.body.get("prompt", None)
        if prompt is None:
            prompt = up.body["messages"][-1]["content"]
        return prompt == ""
    return False


def stream_of(req: JSON) -> bool:
    """Ollama streams unless the request says ``"stream": false``."""
    return req.get("stream") is not False


def _common(req: JSON, body: JSON) -> JSON:
    stream = stream_of(req)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    fmt = response_format(req.get("format"))
    if fmt is not None:
        body["response_format"] = fmt
    think = req.get("think")
    if think is not None:  # true/false, or a level ("high"...), which llama.cpp's templates do not take
        body["chat_template_kwargs"] = {"enable_thinking": think is not False}
    return body


def _unused(req: JSON, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if req.get(k) not in (None, "", [], False)]


def response_format(fmt: Any) -> JSON | None:
    """``format: "json"`` or a JSON schema -> OpenAI's ``response_format``."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise BadRequest(f"format: expected \"json\" or a JSON schema object, got {fmt!r}")


def chat_messages(messages: Any) -> list[JSON]:
    """Ollama's messages as OpenAI's: images become image_url parts, a tool call's arguments a
    JSON string with an id, and a tool's answer names the id of the call it answers."""
    if not isinstance(messages, list):
        raise BadRequest("`messages` must be a list")
    out: list[JSON] = []
    call_ids: dict[str, str] = {}  #: tool name -> the id of its latest call
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a `role`")
        msg: JSON = {"role": m["role"], "content": _content(m.get("content") or "", m.get("images"))}
        calls = m.get("tool_calls")
        if isinstance(calls, list) and calls:
            msg["tool_calls"] = [_tool_call(c, f"call_{i}_{j}", call_ids) for j, c in enumerate(calls)]
        tool = m.get("tool_name") or m.get("name")
        if m["role"] == "tool" and isinstance(tool, str) and tool in call_ids:
            msg["tool_call_id"] = call_ids[tool]
        out.append(msg)
    return out


def _tool_call(call: Any, call_id: str, call_ids: dict[str, str]) -> JSON:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadRequest("a tool call must be {\"function\": {\"name\": ..., \"arguments\": {...}}}")
    args = fn.get("arguments") or {}
    call_ids[fn["name"]] = call_id
    return {"id": call_id, "type": "function",
            "function": {"name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}}


def _content(text: Any, images: Any) -> Any:
    if not isinstance(text, str):
        raise BadRequest("a message's `content` must be a string")
    if not images:
        return text
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadRequest("`images` must be a list of base64 strings")
    parts: list[JSON] = [{"type": "text", "text": text}] if text else []
    return parts + [{"type": "image_url", "image_url": {"url": f"data:{_image_type(i)};base64,{i}"}} for i in images]


def _image_type(b64: str) -> str:
    for prefix, kind in (("iVBOR", "png"), ("/9j/", "jpeg"), ("R0lGOD", "gif"), ("UklGR", "webp")):
        if b64.startswith(prefix):
            return f"image/{kind}"
    return "application/octet-stream"
