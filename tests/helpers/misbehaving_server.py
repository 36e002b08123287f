"""A purpose-built test server that misbehaves on demand (not an engine stand-in for features:
it exists to produce faults a real llama-server will not produce on cue).

    python misbehaving_server.py --port P [--ready-after S] [--never-ready] [--ignore-term]
        [--crash-after S] [--exit-code N] [--fork-child] [--setsid-child] [--exit-now N]

/health answers 503 until ready, then 200.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import sys
import threading
import time


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
    a = ap.parse_args()
    print(f"misbehaving server pid {os.getpid()} args {sys.argv[1:]}", flush=True)
    if a.exit_now is not None:
        print("exiting at once", flush=True)
        sys.exit(a.exit_now)
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = []
    if a.fork_child:
        children.append(os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "1000"))
    if a.setsid_child:
        children.append(os.spawnlp(os.P_NOWAIT, "setsid", "setsid", "sleep", "1001"))
    t0 = time.monotonic()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ready = not a.never_ready and time.monotonic() - t0 >= a.ready_after
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}' if ready else b'{"status":"loading"}')

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer((a.host, a.port), H)
    if a.crash_after is not None:
        def crash():
            time.sleep(a.crash_after)
            print(f"crashing with code {a.exit_code}", flush=True)
            os._exit(a.exit_code)
        threading.Thread(target=crash, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
