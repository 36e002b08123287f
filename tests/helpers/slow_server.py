#!/usr/bin/env python3
"""A test server that is slow on purpose: it answers like an OpenAI-compatible server, but at a
pace the test sets, so that a check on timing holds on a fast CPU as on a slow one (a real
llama-server with a tiny model may finish before the check). It fakes nothing the test
measures about the server itself: it exists to keep a request in flight for a known time.

    python slow_server.py --port P [--ready-after S] [--interval S] [--hold S] [--events FILE]

- GET /health: 503 until --ready-after seconds have passed, then 200.
- GET /v1/models: one model, "slow".
- POST /v1/chat/completions with "stream": true: `max_tokens` (default 16) pieces, one every
  --interval seconds, then a last chunk with finish_reason "length" and usage, then [DONE].
- POST /v1/chat/completions without stream: the answer is held back --hold seconds, or until
  the client goes away.

It also works as a profile's `binary:` (it accepts llama-server's command line and ignores
what it does not know) and reads more switches from $SLOW_SERVER (set through the profile's
`env:`). With --events FILE it appends what happened, one line each: `stream-start`,
`stream-end N`, `stream-gone N` (the client left after N pieces), `plain-start`,
`plain-gone SECONDS`, `plain-end`.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import select
import shlex
import socket
import sys
import time


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ready-after", type=float, default=0.0)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--hold", type=float, default=60.0)
    ap.add_argument("--events", default=None)
    a, _unknown = ap.parse_known_args(sys.argv[1:] + shlex.split(os.environ.get("SLOW_SERVER", "")))
    return a


ARGS = argparse.Namespace()
T0 = time.monotonic()


def event(text: str) -> None:
    if ARGS.events:
        with open(ARGS.events, "a") as f:
            f.write(text + "\n")


def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {"id": "slow-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": "slow",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            ready = time.monotonic() - T0 >= ARGS.ready_after
            self.reply(200 if ready else 503, {"status": "ok" if ready else "loading"})
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": "slow", "object": "model"}]})
        else:
            self.reply(404, {"error": {"message": "not found", "code": 404}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if self.path != "/v1/chat/completions":
            self.reply(404, {"error": {"message": "not found", "code": 404}})
        elif body.get("stream"):
            self.stream(int(body.get("max_tokens") or 16))
        else:
            self.hold()

    def stream(self, n: int) -> None:
        event("stream-start")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            for i in range(n):
                time.sleep(ARGS.interval)
                self.wfile.write(chunk({"content": f"piece{i} "}))
                self.wfile.flush()
                sent += 1
            usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
            self.wfile.write(chunk({}, "length", usage) + b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            event(f"stream-gone {sent}")
            return
        event(f"stream-end {sent}")

    def hold(self) -> None:
        event("plain-start")
        start = time.monotonic()
        while time.monotonic() - start < ARGS.hold:
            if gone(self.connection):
                event(f"plain-gone {time.monotonic() - start:.2f}")
                return
        self.reply(200, {"id": "slow-2", "object": "chat.completion", "model": "slow",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "late"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
        event("plain-end")

    def log_message(self, *args):
        pass


def main() -> None:
    global ARGS, T0
    ARGS, T0 = parse(), time.monotonic()
    print(f"slow server pid {os.getpid()} on {ARGS.host}:{ARGS.port}", flush=True)
    http.server.ThreadingHTTPServer((ARGS.host, ARGS.port), Handler).serve_forever()


def gone(conn: socket.socket, wait: float = 0.05) -> bool:
    """True once the client has closed its side (the request was read in full, so anything
    readable now is the end of the stream)."""
    readable, _, _ = select.select([conn], [], [], wait)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


if __name__ == "__main__":
    main()
