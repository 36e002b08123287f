#!/usr/bin/env python3
"""A purpose-built test server that misbehaves on demand (not an engine stand-in for features:
it exists to produce faults a real llama-server will not produce on cue).

    python misbehaving_server.py --port P [--ready-after S] [--never-ready] [--ignore-term]
        [--crash-after S] [--exit-code N] [--fork-child] [--setsid-child] [--exit-now N]

/health answers 503 until ready, then 200. It also works as a profile's `binary:`: it accepts
llama-server's command line (unknown flags are ignored) and reads its switches from the
MISBEHAVE environment variable (set through the profile's `env:`).

It writes "got SIGTERM" to its log when one arrives; with --ignore-term it adds "ignoring it" and
then "alive N.NNs after SIGTERM" every 50 ms until it is killed, so a test can see that the TERM
came first and how long the KILL took to follow. Without it, it then dies of the SIGTERM.
"""

from __future__ import annotations

import argparse
import http.server
import os
import shlex
import signal
import sys
import threading
import time


def say(text: str) -> None:
    """Print a log line; like llama-server, keep running when the log cannot be written."""
    try:
        print(text, flush=True)
    except OSError:
        pass


def on_term(ignore: bool) -> None:
    """Record each SIGTERM in the log (os.write: a handler must not re-enter print)."""
    first: list[float] = []  # the group and the process itself may each get one

    def alive():
        while True:
            time.sleep(0.05)
            say(f"alive {time.monotonic() - first[0]:.2f}s after SIGTERM")

    def handler(signum, frame):
        try:
            os.write(1, f"got SIGTERM{'; ignoring it' if ignore else ''}\n".encode())
        except OSError:  # a full disk: the signal still counts
            pass
        if not ignore:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        elif not first:
            first.append(time.monotonic())
            threading.Thread(target=alive, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ready-after", type=float, default=0.0)
    ap.add_argument("--never-ready", action="store_true")
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--crash-after", type=float, default=None)
    ap.add_argument("--exit-code", type=int, default=1)
    ap.add_argument("--exit-now", type=int, default=None)
    ap.add_argument("--fork-child", action="store_true", help="start a sleeping child in our group")
    ap.add_argument("--setsid-child", action="store_true", help="start a child that escapes with setsid")
    ap.add_argument("--fail-health-after", type=float, default=None, help="answer 500 after S seconds")
    ap.add_argument("--spam", type=int, default=0, help="print this many log lines per second")
    args = sys.argv[1:] + shlex.split(os.environ.get("MISBEHAVE", ""))
    a, _unknown = ap.parse_known_args(args)
    say(f"misbehaving server pid {os.getpid()} args {sys.argv[1:]}")
    if a.exit_now is not None:
        say("exiting at once")
        sys.exit(a.exit_now)
    on_term(a.ignore_term)
    children = []
    if a.fork_child:
        children.append(os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "1000"))
    if a.setsid_child:
        children.append(os.spawnlp(os.P_NOWAIT, "setsid", "setsid", "sleep", "1001"))
    t0 = time.monotonic()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            age = time.monotonic() - t0
            ready = not a.never_ready and age >= a.ready_after
            if a.fail_health_after is not None and age >= a.fail_health_after:
                self.send_response(500)
                self.end_headers()
                return
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}' if ready else b'{"status":"loading"}')

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer((a.host, a.port), H)
    if a.crash_after is not None:
        def crash():
            time.sleep(a.crash_after)
            say(f"crashing with code {a.exit_code}")
            os._exit(a.exit_code)
        threading.Thread(target=crash, daemon=True).start()
    if a.spam:
        def spam():
            i = 0
            while True:
                for _ in range(a.spam):
                    i += 1
                    say(f"log line {i} " + "x" * 80)
                time.sleep(1)
        threading.Thread(target=spam, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
