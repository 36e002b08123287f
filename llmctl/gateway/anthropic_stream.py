"""A chat-completions event stream as the Messages API's events (see
:mod:`llmctl.gateway.anthropic` for the mapping): pure, fed the server's bytes as they arrive."""

from __future__ import annotations

import json

from .anthropic import Json, error_body, sse, stop_reason, usage


class ChatStream:
    """A chat-completions event stream, fed in pieces as they arrive (:meth:`feed`), as the
    Messages API's events; :meth:`end` when the server's stream has ended."""

    def __init__(self, stop_sequences: list[str] | None = None) -> None:
        self.stops = stop_sequences
        self.buf = b""
        self.started = self.done = False
        self.open: tuple[str, int] | None = None  #: the open block: (text|thinking|tool:N, index)
        self.count = 0  #: blocks started
        self.tools: dict[int, int] = {}  #: the server's tool call index -> block index
        self.last: Json = {}  #: the last choice with a finish_reason
        self.totals: Json = {}  #: the chunk that carried usage (or timings)

    def feed(self, chunk: bytes) -> bytes:
        self.buf += chunk
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.strip()
            if line.startswith(b"data:") and not self.done:
                out.append(self._data(line[5:].strip()))
        return b"".join(out)

    def end(self) -> bytes:
        """What is left to send once the server's stream has ended: the closing events if it
        said how the answer finished, else an error event (it ended without its last events:
        a server that died, where the connection's close ends the body)."""
        out = self.feed(b"\n")
        if self.done:
            return out
        if self.last or not self.started:
            return out + self._finish()
        self.done = True
        return out + sse("error", error_body(502, "the server's answer ended before its last event"))

    def _data(self, data: bytes) -> bytes:
        if data == b"[DONE]":
            return self._finish()
        try:
            obj = json.loads(data)
        except ValueError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if isinstance(obj.get("error"), dict):
            self.done = True
            return sse("error", error_body(502, str(obj["error"].get("message") or obj["error"])))
        out = [] if self.started else [self._start(obj)]
        if obj.get("usage") or obj.get("timings"):
            self.totals = obj
        for choice in obj.get("choices") or []:
            if isinstance(choice, dict):
                out.append(self._delta(choice.get("delta") or {}))
                if choice.get("finish_reason"):
                    self.last = choice
        return b"".join(out)

    def _start(self, obj: Json) -> bytes:
        self.started = True
        message: Json = {"id": obj.get("id"), "type": "message", "role": "assistant", "model": obj.get("model"),
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return sse("message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: Json) -> bytes:
        out = []
        for kind, key, empty in (("thinking", "reasoning_content", {"thinking": "", "signature": ""}),
                                 ("text", "content", {"text": ""})):
            if delta.get(key):
                out.append(self._block(kind, {"type": kind, **empty}))
                assert self.open is not None
                out.append(self._event_delta(self.open[1], {"type": f"{kind}_delta", kind: delta[key]}))
        for call in delta.get("tool_calls") or []:
            out.append(self._tool_delta(call))
        return b"".join(out)

    def _tool_delta(self, call: Json) -> bytes:
        i = call.get("index", 0)
        fn = call.get("function") or {}
        out = b""
        if i not in self.tools:
            start: Json = {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": {}}
            out = self._block(f"tool:{i}", start)
            assert self.open is not None
            self.tools[i] = self.open[1]
        if fn.get("arguments"):
            out += self._event_delta(self.tools[i], {"type": "input_json_delta", "partial_json": fn["arguments"]})
        return out

    def _block(self, kind: str, start: Json) -> bytes:
        """Open a block of ``kind`` unless it is the open one (closing the open one first)."""
        if self.open is not None and self.open[0] == kind:
            return b""
        out = self._close()
        self.open = (kind, self.count)
        self.count += 1
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.open[1],
                                                 "content_block": start})

    def _event_delta(self, index: int, delta: Json) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        index, self.open = self.open[1], None
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _finish(self) -> bytes:
        self.done = True
        out = b"" if self.started else self._start({})
        reason, sequence = stop_reason(self.last, self.stops)
        delta = {"type": "message_delta", "delta": {"stop_reason": reason or "end_turn", "stop_sequence": sequence},
                 "usage": usage(self.totals)}
        return out + self._close() + sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})
