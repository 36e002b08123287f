"""The OpenAI-compatible client: chat completions streamed as Server-Sent Events, embeddings,
the served model's name, a health probe. Works with llama-server and vLLM alike."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import EngineError, NoServerAvailable, RequestTimeout
from . import http
from .request import HttpRequest


class Unreachable(NoServerAvailable):
    """The server's port accepted no connection (raised before anything was received)."""


@dataclass
class ChatResult:
    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  #: as the server reports it


def _send(req: HttpRequest, deadline: float | None, name: str, method: str = "POST") -> http.Response:
    body = json.dumps(req.payload).encode() if method == "POST" else None
    try:
        resp = http.request(method, req.url, body, req.headers, deadline, verify=req.verify)
    except (http.ConnectFailed, http.TLSFailed) as exc:  # nothing was sent: the next route may answer
        raise Unreachable(f"{name}: {exc}", profile=name) from None
    except http.Timeout:
        raise RequestTimeout(f"{name}: no answer from {req.url} within the timeout", profile=name) from None
    except OSError as exc:
        raise EngineError(f"{name}: request to {req.url} failed: {exc}", profile=name) from None
    if resp.status != 200:
        try:
            raw = resp.read()
        except OSError:
            raw = b""
        finally:
            resp.close()
        raise EngineError(f"{name}: the server answered HTTP {resp.status}: {_error_text(raw, resp.reason)}",
                          profile=name, status=resp.status)
    return resp


def _error_text(raw: bytes, reason: str) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    except ValueError:
        return raw.decode(errors="replace").strip()[:500] or reason


@contextmanager
def _reading(resp: http.Response, name: str, what: str) -> Iterator[None]:
    """Read an answer: a timeout or a broken connection becomes the llmctl error; always close."""
    try:
        yield
    except http.Timeout:
        raise RequestTimeout(f"{name}: {what} within the timeout", profile=name) from None
    except OSError as exc:
        raise EngineError(f"{name}: the connection broke while reading the answer: {exc}", profile=name) from None
    finally:
        resp.close()


def stream_chat(req: HttpRequest, *, name: str, deadline: float | None = None,
                on_text: Callable[[str], None] | None = None) -> ChatResult:
    """POST a streaming chat completion; hand each piece of answer text to ``on_text`` as it
    arrives; return the whole answer with usage and the server's timings."""
    resp = _send(req, deadline, name)
    res = ChatResult()
    parts: list[str] = []
    reasoning: list[str] = []
    with _reading(resp, name, "the answer did not finish"):
        for line in resp.lines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            if not data:
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                raise EngineError(f"{name}: unreadable event from the server: {data[:200]!r}", profile=name) from None
            if "error" in obj:
                raise EngineError(f"{name}: the server reported an error: {_error_text(data, '')}", profile=name)
            res.model = obj.get("model") or res.model
            for choice in obj.get("choices") or []:
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece:
                    parts.append(piece)
                    if on_text:
                        on_text(piece)
                think = delta.get("reasoning_content")
                if think:
                    reasoning.append(think)
                if choice.get("finish_reason"):
                    res.finish_reason = choice["finish_reason"]
            usage = obj.get("usage")
            if usage:
                res.tokens_in = usage.get("prompt_tokens", res.tokens_in)
                res.tokens_out = usage.get("completion_tokens", res.tokens_out)
            if obj.get("timings"):
                t = obj["timings"]
                res.timings = {k: t[k] for k in ("prompt_n", "prompt_ms", "prompt_per_second", "predicted_n",
                                                 "predicted_ms", "predicted_per_second", "cache_n") if k in t}
    res.text = "".join(parts)
    res.reasoning = "".join(reasoning)
    return res


def post_json(req: HttpRequest, *, name: str, deadline: float | None = None) -> dict:
    """POST and return the JSON answer (embeddings)."""
    resp = _send(req, deadline, name)
    with _reading(resp, name, "no answer"):
        raw = resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        raise EngineError(f"{name}: the server's answer is not JSON: {raw[:200]!r}", profile=name) from None


def served_models(base_url: str, headers: dict[str, str], *, name: str, deadline: float | None = None,
                  verify: bool = True) -> list[str]:
    """The ids `/v1/models` lists (vLLM serves a model under the name it was started with)."""
    req = HttpRequest(base_url + "/v1/models", {}, headers, verify=verify)
    resp = _send(req, deadline, name, method="GET")
    try:
        data = json.loads(resp.read())
    except (OSError, ValueError):
        return []
    finally:
        resp.close()
    return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET /health`` answers 200 (llama-server and vLLM both have it)."""
    try:
        resp = http.request("GET", base_url + "/health", deadline=time.monotonic() + timeout,
                            connect_timeout=timeout)
    except OSError:
        return False
    try:
        return resp.status == 200
    finally:
        resp.close()
