"""Anthropic's Messages API in the terms of OpenAI's chat completions, and back: pure data in,
data out (no I/O), for the servers that do not answer ``/v1/messages`` themselves, and for
requests whose task sets a sampling value the Messages API cannot carry (:func:`needs_chat`).

Request (:func:`to_chat`): ``system`` (a string or text blocks) becomes the first message;
``text`` and ``image`` blocks become content parts; an assistant's ``tool_use`` blocks become
its ``tool_calls``; a user's ``tool_result`` blocks become ``tool`` messages (placed first, right
after the assistant's calls, as OpenAI requires); ``thinking`` blocks are left out (the model's
earlier reasoning). ``stop_sequences`` becomes ``stop``; ``max_tokens``, ``temperature``,
``top_p`` and ``top_k`` keep their names; ``tools``/``tool_choice`` become functions. Tools
that Anthropic runs on its own servers (a ``type`` and no ``input_schema``: web search, code
execution) cannot run here and are left out. A block with no equivalent (a PDF document, an
image in a tool result) raises :class:`Untranslatable` (400).

Answer (:func:`from_chat`, :class:`ChatStream`): ``reasoning_content`` becomes a ``thinking``
block, text a ``text`` block, each tool call a ``tool_use`` block; ``finish_reason`` maps to
``stop_reason`` (stop: end_turn, length: max_tokens, tool_calls: tool_use, content_filter:
refusal). Which stop sequence ended the answer is known only where the server says (vLLM's
``stop_reason``); llama-server does not, so there it reads ``end_turn``. A stream is the event
sequence message_start, content_block_start/delta/stop per block, message_delta (stop reason
and usage), message_stop; errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
from typing import Any

from ..inference.params import Params

MESSAGES, COUNT_TOKENS = "/v1/messages", "/v1/messages/count_tokens"
#: the sampling keys (llmctl's names) the Messages API carries, with its names for them
CARRIED = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
           "stop": "stop_sequences"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               415: "invalid_request_error", 429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}

Json = dict[str, Any]


class Untranslatable(ValueError):
    """A part of an Anthropic request that chat completions cannot express."""


# -- the request ---------------------------------------------------------------------------
def check(body: Any) -> Json:
    """``body`` if it is a Messages request the gateway can route, else ValueError."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    if not isinstance(body.get("messages"), list):
        raise ValueError("the request has no `messages` list")
    return body


def needs_chat(params: Params) -> bool:
    """True when the task (or ``defaults.sampling``) sets a value the Messages API has no field
    for (min_p, penalties, mirostat, seed): the request then goes through chat completions, so
    that the value applies (the servers' own /v1/messages drop such fields)."""
    return any(key not in CARRIED for key in params.sampling)


def fill(body: Json, params: Params, *, sampling: bool = True) -> Json:
    """A Messages body with the task's values the client did not send (the client wins) and the
    task's system prompt when the client sent none."""
    out = dict(body)
    if sampling:
        for key, name in CARRIED.items():
            if key in params.sampling and name not in out:
                out[name] = params.sampling[key]
    if params.system and not out.get("system"):
        out["system"] = params.system
    return out


def to_chat(body: Json) -> Json:
    """The chat-completions request for a Messages request (``model`` copied as is)."""
    messages: list[Json] = []
    system = _text_of(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    for msg in body["messages"]:
        messages += _message(msg)
    out: Json = {"model": body.get("model"), "messages": messages}
    for name in ("max_tokens", "temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = [_tool(t) for t in body.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    if tools:
        out["tools"] = tools
        out.update(_tool_choice(body.get("tool_choice")))
    return out


def _message(msg: Any) -> list[Json]:
    if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
        raise Untranslatable("each message must be an object with `role` user or assistant")
    content = msg.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(blocks, list):
        raise Untranslatable("a message's `content` must be a string or a list of blocks")
    if msg["role"] == "assistant":
        return [_assistant(blocks)]
    out = [_tool_result(b) for b in blocks if _kind(b) == "tool_result"]
    parts = [_part(b) for b in blocks if _kind(b) not in ("tool_result", "thinking", "redacted_thinking")]
    if parts or not out:
        texts = [p["text"] for p in parts if p["type"] == "text"]
        out.append({"role": "user", "content": "\n".join(texts) if len(texts) == len(parts) else parts})
    return out


def _kind(block: Any) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise Untranslatable("each content block must be an object with a `type`")
    return str(block["type"])


def _part(block: Json) -> Json:
    kind = _kind(block)
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    source: Json = block["source"] if isinstance(block.get("source"), dict) else {}
    if kind == "image" and source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "image" and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    if kind == "document" and source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    what = f"{kind} block" + (f" with a {source['type']} source" if source.get("type") else "")
    raise Untranslatable(f"a {what} has no chat-completions equivalent on this server; send text or images")


def _assistant(blocks: list[Any]) -> Json:
    texts, calls = [], []
    for b in blocks:
        kind = _kind(b)
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind == "tool_use":
            arguments = json.dumps(b.get("input") or {})
            calls.append({"id": b.get("id"), "type": "function",
                          "function": {"name": b.get("name"), "arguments": arguments}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise Untranslatable(f"an assistant message cannot hold a {kind} block here")
    out: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_result(block: Json) -> Json:
    text = _text_of(block.get("content"), "tool_result") or ""
    if block.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _text_of(value: Any, where: str) -> str | None:
    """A string, or the text of a list of text blocks (joined by newlines)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise Untranslatable(f"`{where}` must be a string or a list of text blocks")
    texts = []
    for b in value:
        if _kind(b) != "text":
            raise Untranslatable(f"a {b['type']} block inside `{where}` has no chat-completions equivalent; "
                                 f"send text there")
        texts.append(str(b.get("text", "")))
    return "\n".join(texts)


def _tool(tool: Json) -> Json:
    fn = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Json:
    if not isinstance(choice, dict):
        return {}
    kind = choice.get("type")
    out: Json = {}
    if kind in ("auto", "none"):
        out["tool_choice"] = kind
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# -- the answer ----------------------------------------------------------------------------
def from_chat(resp: Json, stop_sequences: list[str] | None = None) -> Json:
    """The Messages answer for a chat-completions answer."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[Json] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": tool_input(fn.get("arguments"))})
    reason, sequence = stop_reason(choice, stop_sequences)
    return {"id": resp.get("id"), "type": "message", "role": "assistant", "model": resp.get("model"),
            "content": content, "stop_reason": reason, "stop_sequence": sequence, "usage": usage(resp)}


def tool_input(arguments: Any) -> Any:
    """A tool call's arguments as the ``input`` object; text that is no JSON object is kept
    whole under ``arguments``."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def stop_reason(choice: Json, stop_sequences: list[str] | None) -> tuple[str | None, str | None]:
    finish = choice.get("finish_reason")
    said = choice.get("stop_reason")  # vLLM: the stop string that matched
    if finish == "stop" and isinstance(said, str) and said in (stop_sequences or []):
        return "stop_sequence", said
    if finish is None:
        return None, None
    return STOP_REASONS.get(str(finish), "end_turn"), None


def usage(resp: Json) -> Json:
    """Anthropic's usage (input tokens exclude the cached ones) from ``usage``, else from
    llama-server's ``timings``."""
    u: Json = resp["usage"] if isinstance(resp.get("usage"), dict) else {}
    t: Json = resp["timings"] if isinstance(resp.get("timings"), dict) else {}
    if u.get("prompt_tokens") is not None or u.get("completion_tokens") is not None:
        details = u.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") or 0
        return {"input_tokens": (u.get("prompt_tokens") or 0) - cached,
                "output_tokens": u.get("completion_tokens") or 0,
                "cache_read_input_tokens": cached}
    if t:
        return {"input_tokens": t.get("prompt_n") or 0, "output_tokens": t.get("predicted_n") or 0,
                "cache_read_input_tokens": t.get("cache_n") or 0}
    return {"input_tokens": 0, "output_tokens": 0}


def answer(status: int, raw: bytes, stop_sequences: list[str] | None = None) -> bytes:
    """A whole chat-completions answer (any status) as the Messages answer's bytes."""
    if status >= 400:
        return error_from(status, raw)
    try:
        resp = json.loads(raw)
    except ValueError:
        return error_from(502, raw)
    return json.dumps(from_chat(resp, stop_sequences)).encode()


# -- errors --------------------------------------------------------------------------------
def error_body(status: int, message: str, facts: Json | None = None) -> Json:
    err: Json = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
    err.update(facts or {})
    return {"type": "error", "error": err}


def is_anthropic_error(raw: bytes) -> bool:
    try:
        obj = json.loads(raw)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "error"


def error_from(status: int, raw: bytes) -> bytes:
    """An error answer of any shape (OpenAI's, FastAPI's, text) in the Messages API's shape."""
    if status < 400 or is_anthropic_error(raw):
        return raw
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and err.get("message"):
        message = str(err["message"])
    elif isinstance(obj, dict) and obj.get("detail"):
        message = str(obj["detail"])
    else:
        message = raw.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    return json.dumps(error_body(status, message)).encode()


def sse(event: str, data: Json) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def error_event(message: str, profile: str) -> bytes:
    """The event that ends a stream the server broke off (what the anthropic client raises)."""
    return sse("error", error_body(502, message, {"profile": profile}))

