"""Answers of the gateway's servers (OpenAI-style) as Ollama's: one object, or, for a stream,
Server-Sent Events in and NDJSON lines out (:class:`StreamTranslator`). Pure: the clock is
passed in. Ollama's answers carry token counts and durations in nanoseconds; they are taken
from the answer's ``usage`` and llama-server's ``timings`` (``load_duration`` is 0: a start is
the gateway's, not the request's)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

from .ollama import DONE_REASONS, JSON


def _obj(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def timestamp(wall: float) -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ndjson(obj: JSON) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def error_message(body: bytes) -> str:
    """The message of a server's error answer (OpenAI's ``{"error": {"message"}}`` or plain text)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or "the server answered with an error"
    return error_text(data)


def error_text(data: Any) -> str:
    """The message of a parsed error answer or event."""
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def stats(answer: JSON, total_ns: int) -> JSON:
    """Ollama's counts and durations from an answer's ``usage`` and ``timings``."""
    out: JSON = {"total_duration": total_ns, "load_duration": 0}
    usage = _obj(answer.get("usage"))
    timings = _obj(answer.get("timings"))
    prompt = usage.get("prompt_tokens")
    if prompt is None and timings:
        prompt = (timings.get("prompt_n") or 0) + (timings.get("cache_n") or 0)
    done = usage.get("completion_tokens", timings.get("predicted_n"))
    if prompt is not None:
        out["prompt_eval_count"] = prompt
    if done is not None:
        out["eval_count"] = done
    for key, ms in (("prompt_eval_duration", "prompt_ms"), ("eval_duration", "predicted_ms")):
        if isinstance(timings.get(ms), (int, float)):
            out[key] = int(timings[ms] * 1e6)
    return out


def done_reason(finish: Any) -> str:
    return DONE_REASONS.get(finish, finish) if isinstance(finish, str) else "stop"


def tool_calls(calls: Any) -> list[JSON]:
    """OpenAI's tool calls (arguments: a JSON string) as Ollama's (arguments: an object)."""
    out: list[JSON] = []
    for c in calls if isinstance(calls, list) else []:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict):
            continue
        args: Any = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"arguments": args}
        out.append({"function": {"name": fn.get("name") or "", "arguments": args if isinstance(args, dict) else {}}})
    return out


def _message(msg: JSON) -> JSON:
    out: JSON = {"role": "assistant", "content": msg.get("content") or ""}
    if msg.get("reasoning_content"):
        out["thinking"] = msg["reasoning_content"]
    calls = tool_calls(msg.get("tool_calls"))
    if calls:
        out["tool_calls"] = calls
    return out


def reply(kind: str, answer: JSON, model: str, created_at: str, total_ns: int) -> JSON:
    """The whole (not streamed) answer of a chat, generate, embed or embeddings request."""
    if kind in ("embed", "embeddings"):
        return embed_reply(kind, answer, model, total_ns)
    choice = (answer.get("choices") or [{}])[0]
    out: JSON = {"model": model, "created_at": created_at}
    msg = choice.get("message")
    message = _message(msg) if isinstance(msg, dict) else {"role": "assistant", "content": choice.get("text") or ""}
    if kind == "chat":
        out["message"] = message
    else:
        out["response"] = message["content"]
        if message.get("thinking"):
            out["thinking"] = message["thinking"]
    out.update(done=True, done_reason=done_reason(choice.get("finish_reason")), **stats(answer, total_ns))
    return out


def embed_reply(kind: str, answer: JSON, model: str, total_ns: int) -> JSON:
    rows = sorted((d for d in answer.get("data") or [] if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in rows]
    if kind == "embeddings":
        return {"embedding": vectors[0] if vectors else []}
    usage = _obj(answer.get("usage"))
    return {"model": model, "embeddings": vectors, "total_duration": total_ns, "load_duration": 0,
            "prompt_eval_count": usage.get("prompt_tokens", 0)}


def load_reply(kind: str, model: str, created_at: str, reason: str) -> JSON:
    """The answer to a request that only loads (``reason`` load) or unloads (unload) a model."""
    out: JSON = {"model": model, "created_at": created_at, "done": True, "done_reason": reason}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return out


class StreamTranslator:
    """An OpenAI-style event stream (chat or completions chunks) in, Ollama's NDJSON lines out:
    one line per piece of text, then a last one with ``done: true``, the done reason, the tool
    calls (assembled from their fragments) and the counts. An error event becomes
    ``{"error": "..."}`` (the Ollama clients raise it) and ends the stream. ``feed`` takes the
    bytes as they arrive, split anywhere; ``end`` closes it."""

    def __init__(self, kind: str, model: str, wall: Callable[[], float], started: float) -> None:
        self.kind, self.model, self.wall, self.started = kind, model, wall, started
        self.finished = False
        self._buf = b""
        self._finish: Any = None
        self._counts: JSON = {}
        self._calls: dict[int, JSON] = {}  #: index -> {"name", "arguments" (the fragments joined)}

    def feed(self, chunk: bytes) -> bytes:
        self._buf += chunk
        out = []
        while (i := self._buf.find(b"\n")) >= 0:
            line, self._buf = self._buf[:i].strip(), self._buf[i + 1:]
            if line.startswith(b"data:"):
                out.append(self._event(line[5:].strip()))
        return b"".join(out)

    def end(self) -> bytes:
        """The rest: the last line, unless the stream already ended (``[DONE]`` or an error)."""
        rest = self.feed(b"\n") if self._buf.strip() else b""
        return rest + (b"" if self.finished else self._final())

    def _event(self, data: bytes) -> bytes:
        if self.finished:
            return b""
        if data == b"[DONE]":
            return self._final()
        try:
            obj = json.loads(data)
        except ValueError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if "error" in obj:
            self.finished = True
            return ndjson({"error": error_text(obj)})
        for key in ("usage", "timings"):
            if isinstance(obj.get(key), dict):
                self._counts[key] = obj[key]
        choices = obj.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        delta = _obj(choice.get("delta"))
        self._collect_calls(delta.get("tool_calls"))
        text = delta.get("content") or choice.get("text") or ""
        thinking = delta.get("reasoning_content") or ""
        return ndjson(self._piece(text, thinking, False)) if text or thinking else b""

    def _collect_calls(self, calls: Any) -> None:
        for c in calls if isinstance(calls, list) else []:
            if not isinstance(c, dict):
                continue
            fn = _obj(c.get("function"))
            slot = self._calls.setdefault(c.get("index", len(self._calls)), {"name": "", "arguments": ""})
            slot["name"] = slot["name"] or fn.get("name") or ""
            slot["arguments"] += fn.get("arguments") or ""

    def _piece(self, text: str, thinking: str, done: bool) -> JSON:
        out: JSON = {"model": self.model, "created_at": timestamp(self.wall())}
        if self.kind == "chat":
            out["message"] = {"role": "assistant", "content": text}
            if thinking:
                out["message"]["thinking"] = thinking
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
        out["done"] = done
        return out

    def _final(self) -> bytes:
        self.finished = True
        out = self._piece("", "", True)
        calls = tool_calls([{"function": c} for _, c in sorted(self._calls.items())])
        if calls and self.kind == "chat":
            out["message"]["tool_calls"] = calls
        out["done_reason"] = done_reason(self._finish)
        out.update(stats(self._counts, int((self.wall() - self.started) * 1e9)))
        return ndjson(out)
