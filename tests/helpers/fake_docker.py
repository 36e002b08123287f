#!/usr/bin/env python3
"""A stand-in for the `docker` CLI (no Docker engine runs on these machines).

Put first on PATH under the name `docker`. It records every call (argv as JSON lines) in
$FAKE_DOCKER_DIR/calls.jsonl and keeps one JSON file per "container". `run` starts the
misbehaving test server on the published port as the container's process and stays attached
(its output is the container's output, also kept for `logs`); `inspect`, `stop`, `rm` and
`logs` answer the way Docker's CLI does for what llmctl asks. It never claims a real container.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DIR = Path(os.environ.get("FAKE_DOCKER_DIR", "/tmp/fake-docker"))
HELPER = Path(__file__).resolve().with_name("misbehaving_server.py")  # resolve: we run via a symlink


def record(argv: list[str]) -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    with open(DIR / "calls.jsonl", "a") as f:
        f.write(json.dumps({"argv": argv, "env_passed": {n: os.environ.get(n) for n in _env_names(argv)}}) + "\n")


def _env_names(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-e"]


def box(name: str) -> Path:
    return DIR / f"{name}.json"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def load(name: str) -> dict | None:
    try:
        return json.loads(box(name).read_text())
    except (OSError, ValueError):
        return None


def cmd_run(args: list[str]) -> int:
    name, port, rm = None, None, False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--name":
            name = args[i + 1]; i += 2; continue
        if a == "-p":
            port = int(args[i + 1].rsplit(":", 1)[1]); i += 2; continue
        if a == "--rm":
            rm = True
        if a in ("-v", "-e", "--device", "--group-add", "--gpus", "--security-opt"):
            i += 2; continue
        if not a.startswith("-"):
            break  # the image
        i += 1
    if name and load(name):
        print(f"docker: Error response from daemon: Conflict. The container name \"/{name}\" is already in use",
              file=sys.stderr)
        return 125
    proc = subprocess.Popen([sys.executable, str(HELPER), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    box(name).write_text(json.dumps({"pid": proc.pid, "running": True, "exit": None, "rm": rm}))

    def forward(signum, frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    with open(DIR / f"{name}.log", "a") as log:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
    code = proc.wait()
    if rm:
        box(name).unlink(missing_ok=True)
    else:
        box(name).write_text(json.dumps({"pid": proc.pid, "running": False, "exit": code, "rm": rm}))
    return code if code >= 0 else 128 - code


def cmd_inspect(args: list[str]) -> int:
    name = args[-1]
    c = load(name)
    if c is None:
        print("[]")
        print(f"Error: No such object: {name}", file=sys.stderr)
        return 1
    running = c["running"] and alive(c["pid"])
    print(json.dumps([{"Name": f"/{name}", "State": {"Status": "running" if running else "exited",
                                                      "Running": running, "ExitCode": c["exit"] or 0,
                                                      "OOMKilled": False, "Pid": c["pid"] if running else 0}}]))
    return 0


def cmd_stop(args: list[str]) -> int:
    name, t = args[-1], 10
    if "-t" in args:
        t = int(args[args.index("-t") + 1])
    c = load(name)
    if c is None:
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    if alive(c["pid"]):
        os.kill(c["pid"], signal.SIGTERM)
        deadline = time.monotonic() + t
        while alive(c["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(c["pid"]):
            os.kill(c["pid"], signal.SIGKILL)
    print(name)
    return 0


def cmd_rm(args: list[str]) -> int:
    name = args[-1]
    c = load(name)
    if c is None:
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    if alive(c["pid"]):
        if "-f" not in args:
            print("Error response from daemon: cannot remove a running container", file=sys.stderr)
            return 1
        os.kill(c["pid"], signal.SIGKILL)
    box(name).unlink(missing_ok=True)
    print(name)
    return 0


def cmd_logs(args: list[str]) -> int:
    name = args[-1]
    path = DIR / f"{name}.log"
    if not path.exists():
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    lines = path.read_text().splitlines()
    if "--tail" in args:
        lines = lines[-int(args[args.index("--tail") + 1]):]
    print("\n".join(lines))
    return 0


def main() -> int:
    argv = sys.argv[1:]
    record(argv)
    if not argv:
        return 1
    cmd, rest = argv[0], argv[1:]
    handler = {"run": cmd_run, "inspect": cmd_inspect, "stop": cmd_stop, "rm": cmd_rm, "logs": cmd_logs}.get(cmd)
    if handler is None:
        print(f"fake docker: {cmd} not supported", file=sys.stderr)
        return 1
    return handler(rest)


if __name__ == "__main__":
    sys.exit(main())
