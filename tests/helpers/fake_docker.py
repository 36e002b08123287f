#!/usr/bin/env python3
"""A stand-in for the `docker` CLI and its daemon, for what a real engine cannot be made to do here.

A real engine runs on these machines: podman with the runc runtime (tests/test_podman.py, with
`command: podman` and podman-docker's `docker`). There, every behaviour of the launcher runs for
real: up, status, run, logs, down; a SIGKILL inside the container; an exit at start; a runtime
that refuses the container; an OOM kill under --memory; a killed client, a killed keeper; a
stale container and a foreign running one; a taken port; the VRAM of the container's processes.
This stand-in stays for these cases of tests/test_docker.py, each for the reason given:

- test_oom_kill_is_reported_from_inspect: State.OOMKilled = true. The runtime does enforce
  --memory here (the kernel's OOM killer ends the server, exit 137), but podman 4.3 on this
  cgroup-v1 host leaves OOMKilled false, so llmctl's reading of the flag cannot be shown on it.
- test_exit_code_comes_from_inspect_not_the_client: a client whose exit status is not its
  container's (Docker's client exits 125 on its own when it loses its daemon). podman has no
  daemon to lose, and its `run` relays the container's code.
- The exact calls and their order (`inspect NAME`, `stop -t N` before `rm -f`, `logs --tail N`,
  `run` without --rm, the devices added for ROCm): a real engine does not record what it was
  asked. test_lifecycle_against_stand_in_docker, test_client_killed_container_running_is_stopped_
  removed_and_restarted, test_stale_container_is_removed_and_running_one_refused and
  test_status_counts_vram_of_the_container_process check those calls; their behaviour also runs
  on the real engine (tests/test_podman.py).

Tests put this file first on PATH under the name `docker`; nothing here is, or claims to be, a
real container: the "container" is tests/helpers/misbehaving_server.py on the published port.

``fake_docker.py daemon`` (started by the test fixture, one per test) plays dockerd and
containerd-shim: it starts each container's process as its own child, so that, as with Docker,
the container's processes are not children of the `docker run` client, and it records each
container's state in $FAKE_DOCKER_DIR/NAME.json. Its address is in $FAKE_DOCKER_DIR/daemon.addr;
without a daemon, `run` fails the way Docker's CLI does ("Cannot connect to the Docker daemon").

The CLI records every call (argv as JSON lines) in $FAKE_DOCKER_DIR/calls.jsonl and answers the
way Docker's CLI does for what llmctl asks: `run` (attached: streams the container's output,
forwards SIGTERM/SIGINT to it like --sig-proxy, exits with the container's exit code; the
container stays after it exited unless --rm), `inspect` (State: Status, Running, ExitCode,
OOMKilled, Pid, StartedAt), `stop -t N`, `rm [-f]`, `logs [--tail N]`.

Behaviour switches, read from the `docker run` client's environment:
  FAKE_DOCKER_OOM_AFTER=S     S seconds after the start the "kernel" OOM-kills the container:
                              SIGKILL, then State.OOMKilled=true and State.ExitCode=137.
                              (Creating the file $FAKE_DOCKER_DIR/NAME.oom-kill does the same
                              at once, for a running container NAME.)
  FAKE_DOCKER_KEEP_RUNNING=1  the container keeps running after its client is killed (what
                              Docker does). Without it the daemon stops the container (SIGTERM)
                              when its client dies.
  FAKE_DOCKER_CLIENT_EXIT=N   the client exits with N whatever the container's exit code was
                              (a client that lost its daemon, say): only inspect knows the truth.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

DIR = Path(os.environ.get("FAKE_DOCKER_DIR", "/tmp/fake-docker"))
HELPER = Path(__file__).resolve().with_name("misbehaving_server.py")  # resolve: we run via a symlink
ADDR = DIR / "daemon.addr"
SWITCHES = ("FAKE_DOCKER_OOM_AFTER", "FAKE_DOCKER_KEEP_RUNNING", "FAKE_DOCKER_CLIENT_EXIT")


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
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def load(name: str) -> dict | None:
    try:
        return json.loads(box(name).read_text())
    except (OSError, ValueError):
        return None


def save(name: str, data: dict) -> None:
    tmp = DIR / f".{name}.json.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, box(name))


def running(c: dict) -> bool:
    return bool(c.get("running")) and alive(c["pid"])


# -- the daemon -----------------------------------------------------------------------------
class Daemon(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Attach)
        self.lock = threading.Lock()
        self.procs: dict[str, subprocess.Popen] = {}


class Attach(socketserver.StreamRequestHandler):
    """One `docker run`: start the container, tell the client its pid, watch it, report the exit."""

    def handle(self) -> None:
        req = json.loads(self.rfile.readline())
        name, env, switches = req["name"], dict(os.environ), req["switches"]
        env.update(req["env"])
        log = DIR / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, str(HELPER), "--port", str(req["port"])], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        with self.server.lock:
            self.server.procs[name] = proc
        started = time.time()
        save(name, {"pid": proc.pid, "running": True, "exit": None, "oom": False, "rm": req["rm"],
                    "daemon": True, "started": started})
        self.wfile.write((json.dumps({"pid": proc.pid, "offset": offset}) + "\n").encode())
        self.wfile.flush()
        oom_after = float(switches["FAKE_DOCKER_OOM_AFTER"]) if switches.get("FAKE_DOCKER_OOM_AFTER") else None
        keep_running = switches.get("FAKE_DOCKER_KEEP_RUNNING") == "1"
        oom = client_gone = False
        while proc.poll() is None:
            if not oom and ((oom_after is not None and time.time() - started >= oom_after)
                            or (DIR / f"{name}.oom-kill").exists()):
                (DIR / f"{name}.oom-kill").unlink(missing_ok=True)
                proc.kill()  # the kernel's OOM killer does not ask
                oom = True
            if not keep_running and not client_gone and not alive(req["client_pid"]):
                client_gone = True
                proc.terminate()
            time.sleep(0.02)
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        with self.server.lock:
            self.server.procs.pop(name, None)
        c = load(name)
        if c is not None and c.get("pid") == proc.pid:
            if req["rm"]:
                box(name).unlink(missing_ok=True)
                log.unlink(missing_ok=True)
            else:
                save(name, {**c, "running": False, "exit": code, "oom": oom})
        try:
            self.wfile.write((json.dumps({"exit": code}) + "\n").encode())
            self.wfile.flush()
        except OSError:
            pass  # the client is gone


def cmd_daemon(args: list[str]) -> int:
    DIR.mkdir(parents=True, exist_ok=True)
    srv = Daemon()
    left_file = DIR / "daemon.left"

    def shut(signum, frame):
        """Kill what still runs (and say so in daemon.left: the test fails on it), then exit."""
        with srv.lock:
            procs = list(srv.procs.items())
        left = [{"name": n, "pid": p.pid} for n, p in procs if p.poll() is None]
        for _, p in procs:
            try:
                p.kill()
            except OSError:
                pass
        for _, p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        left_file.write_text(json.dumps(left))
        ADDR.unlink(missing_ok=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, shut)
    signal.signal(signal.SIGINT, shut)
    tmp = DIR / ".daemon.addr"
    tmp.write_text("{}:{}".format(*srv.server_address))
    os.replace(tmp, ADDR)
    srv.serve_forever(poll_interval=0.1)
    return 0


# -- the CLI --------------------------------------------------------------------------------
def _run_options(args: list[str]) -> tuple[str | None, int | None, bool]:
    """`docker run`'s --name, the host port of -p and --rm; stops at the image."""
    name, port, rm = None, None, False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--name":
            name = args[i + 1]
            i += 2
        elif a == "-p":
            port = int(args[i + 1].rsplit(":", 1)[1])
            i += 2
        elif a in ("-v", "-e", "--device", "--group-add", "--gpus", "--security-opt"):
            i += 2
        elif not a.startswith("-"):
            break  # the image
        else:
            rm = rm or a == "--rm"
            i += 1
    return name, port, rm


def _follow(sock: socket.socket, reader, log: Path, offset: int) -> int:
    """Copy the container's log to stdout until the daemon reports its exit code."""

    def pump() -> None:
        nonlocal offset
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return
        if data:
            offset += len(data)
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            except OSError:
                pass

    code = None
    sock.settimeout(None)
    while code is None:
        pump()
        try:
            ready, _, _ = select.select([sock], [], [], 0.05)
        except InterruptedError:
            continue
        if ready:
            line = reader.readline()
            if not line:
                code = 125  # the daemon went away
                break
            code = json.loads(line)["exit"]
    pump()
    return code


def cmd_run(args: list[str]) -> int:
    name, port, rm = _run_options(args)
    if name and load(name):
        print(f"docker: Error response from daemon: Conflict. The container name \"/{name}\" is already in use",
              file=sys.stderr)
        return 125
    try:
        host, p = ADDR.read_text().rsplit(":", 1)
        sock = socket.create_connection((host, int(p)), timeout=10)
    except (OSError, ValueError):
        print("docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
              "Is the docker daemon running?", file=sys.stderr)
        return 125
    env = {n: os.environ[n] for n in _env_names(args) if n in os.environ}
    switches = {n: os.environ[n] for n in SWITCHES if n in os.environ}
    sock.sendall((json.dumps({"name": name, "port": port, "env": env, "switches": switches, "rm": rm,
                              "client_pid": os.getpid()}) + "\n").encode())
    reader = sock.makefile("rb")
    hello = json.loads(reader.readline())
    pid = hello["pid"]

    def forward(signum, frame):  # --sig-proxy: the client passes signals on to the container
        try:
            os.kill(pid, signum)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = _follow(sock, reader, DIR / f"{name}.log", hello["offset"])
    forced = os.environ.get("FAKE_DOCKER_CLIENT_EXIT")
    return int(forced) if forced else code


def cmd_inspect(args: list[str]) -> int:
    name = args[-1]
    c = load(name)
    if c is None:
        print("[]")
        print(f"Error: No such object: {name}", file=sys.stderr)
        return 1
    run = running(c)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.get("started", 0)))
    print(json.dumps([{"Name": f"/{name}", "State": {
        "Status": "running" if run else "exited", "Running": run, "Paused": False, "Restarting": False,
        "OOMKilled": bool(c.get("oom")), "Dead": False, "Pid": c["pid"] if run else 0,
        "ExitCode": 0 if run else (c.get("exit") or 0), "Error": "", "StartedAt": started}}]))
    return 0


def _settled(name: str, timeout: float = 5.0) -> None:
    """Wait until the daemon has recorded the exit of a container it runs (Docker's CLI returns
    after the state is updated)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = load(name)
        if c is None or not c.get("daemon") or not c.get("running"):
            return
        time.sleep(0.02)


def cmd_stop(args: list[str]) -> int:
    name, t = args[-1], 10
    if "-t" in args:
        t = int(args[args.index("-t") + 1])
    c = load(name)
    if c is None:
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    if running(c):
        os.kill(c["pid"], signal.SIGTERM)
        deadline = time.monotonic() + t
        while alive(c["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(c["pid"]):
            os.kill(c["pid"], signal.SIGKILL)
        _settled(name)
    print(name)
    return 0


def cmd_rm(args: list[str]) -> int:
    name = args[-1]
    c = load(name)
    if c is None:
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    if running(c):
        if "-f" not in args:
            print(f"Error response from daemon: cannot remove container \"/{name}\": container is running: "
                  "stop the container before removing or force remove", file=sys.stderr)
            return 1
        os.kill(c["pid"], signal.SIGKILL)
        _settled(name)
    box(name).unlink(missing_ok=True)
    (DIR / f"{name}.log").unlink(missing_ok=True)
    print(name)
    return 0


def cmd_logs(args: list[str]) -> int:
    name = args[-1]
    path = DIR / f"{name}.log"
    if load(name) is None or not path.exists():
        print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
        return 1
    lines = path.read_text().splitlines()
    if "--tail" in args:
        lines = lines[-int(args[args.index("--tail") + 1]):]
    print("\n".join(lines))
    return 0


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["daemon"]:
        return cmd_daemon(argv[1:])
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
