"""What the CLI writes, end to end: `logs -f` across log rotations, NO_COLOR on a terminal,
`up --json` / `down --json`, and the default (XDG) locations with their modes. The server is the
purpose-built misbehaving server of tests/helpers as a profile's `binary:` (it accepts
llama-server's command line): these tests are about llmctl's output, not the engine's."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .util import cli, wait_for

HELPER = str(Path(__file__).parent / "helpers" / "misbehaving_server.py")
ANSI = re.compile(rb"\x1b[\[\]()]")


def profiles(tmp_path: Path, port: int, misbehave: str = "") -> dict:
    model = tmp_path / "dummy.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "srv.yaml"
    f.write_text(f"profiles:\n  srv: {{model: {model}, port: {port}, binary: {HELPER}, stop_timeout: 2, "
                 f"env: {{MISBEHAVE: '{misbehave}'}}}}\n")
    return {"LLMCTL_PROFILES": str(f)}


def on_terminal(args: list[str], env: dict, timeout: float = 60) -> tuple[int, bytes]:
    """Run `llmctl ARGS` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env={**os.environ, "TERM": "xterm-256color", **env})
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if data:
                    out += data
                    continue
            if proc.poll() is not None and not ready:
                break
        return proc.wait(max(0.1, deadline - time.monotonic())), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_color_means_no_escape_sequences_even_on_a_terminal(tmp_path, ports):
    """On a terminal llmctl colours its table and errors and draws live progress; with NO_COLOR
    set, none of its output (tables, errors, `up`'s progress, `down`, `logs`) has an escape
    sequence."""
    env = profiles(tmp_path, ports(), "--ready-after 0.5")
    for args in (["status"], ["status", "nosuch"]):  # the terminal is seen as one: escapes
        assert ANSI.search(on_terminal(args, env)[1]), args
    env["NO_COLOR"] = "1"
    for args, code in ((["status"], 3), (["status", "nosuch"], 4), (["up", "srv"], 0), (["status"], 0),
                       (["logs", "srv"], 0), (["down", "srv"], 0), (["profiles", "list"], 0)):
        rc, out = on_terminal(args, env)
        assert rc == code, (args, out)
        assert not ANSI.search(out), (args, out)
    assert ANSI.search(on_terminal(["status", "nosuch"], {**env, "NO_COLOR": ""})[1])  # empty: not set


def test_up_and_down_json(tmp_path, ports):
    """`up --json` and `down --json` print one JSON document on stdout with each server's
    outcome; progress stays on stderr."""
    port = ports()
    env = profiles(tmp_path, port)
    r = cli("up", "srv", "--json", env=env)
    assert r.returncode == 0, r.stderr
    [up] = json.loads(r.stdout)
    assert up["name"] == "srv" and up["outcome"] == "started" and up["url"] == f"http://127.0.0.1:{port}"
    assert up["seconds"] > 0 and psutil.Process(up["pid"]).is_running()
    assert "srv:" in r.stderr  # progress
    [again] = json.loads(cli("up", "srv", "--json", env=env).stdout)
    assert again["outcome"] == "already-running" and again["pid"] == up["pid"]
    r = cli("down", "srv", "--json", env=env)
    assert r.returncode == 0, r.stderr
    [down] = json.loads(r.stdout)
    assert down["name"] == "srv" and down["outcome"] == "stopped" and down["killed"] is False
    assert isinstance(down["pids"], list)  # what `down` found left after the keeper's stop
    assert not psutil.pid_exists(up["pid"]) or psutil.Process(up["pid"]).status() == psutil.STATUS_ZOMBIE
    assert json.loads(cli("down", "srv", "--json", env=env).stdout) == [
        {"name": "srv", "outcome": "not-running", "killed": False, "pids": []}]


def test_logs_follow_goes_on_across_rotations(tmp_path, ports):
    """`logs -f` keeps following while the keeper rotates the log (copy, then truncate; the
    size limit made small with LLMCTL_LOG_MAX_BYTES): it shows what is written after each
    rotation, and never a line twice."""
    env = profiles(tmp_path, ports(), "--spam 200")
    env["LLMCTL_LOG_MAX_BYTES"] = "20000"
    assert cli("up", "srv", env=env).returncode == 0
    log = Path(os.environ["LLMCTL_HOME"]) / "logs" / "srv.log"
    follow = subprocess.Popen([sys.executable, "-m", "llmctl", "logs", "srv", "-f", "-n", "0"],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: str(log) in (f.path for f in psutil.Process(follow.pid).open_files()), what="logs -f")
        wait_for(lambda: after_rotations(list(seen), 2), timeout=60, what="lines after two rotations")
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)
        assert cli("down", "srv", env=env).returncode == 0
    numbers = [int(m.group(1)) for ln in seen if (m := re.match(r"log line (\d+) ", ln))]
    assert numbers == sorted(set(numbers)), "a line shown twice or out of order"


def after_rotations(lines: list[str], n: int) -> bool:
    """``lines`` show at least ``n`` rotations (the keeper's note, first in the new file) and a
    server line written after the last of them."""
    marks = [i for i, ln in enumerate(lines) if "log rotated" in ln]
    return len(marks) >= n and any(ln.startswith("log line ") for ln in lines[marks[-1]:])


@pytest.mark.parametrize("xdg", [True, False], ids=["xdg-vars", "home-fallback"])
def test_default_locations_are_private(tmp_path, ports, monkeypatch, xdg):
    """Without LLMCTL_HOME, state, locks and logs go to $XDG_STATE_HOME/llmctl (else
    ~/.local/state/llmctl), and every directory llmctl makes there is mode 0700 even under a
    permissive umask (022)."""
    monkeypatch.delenv("LLMCTL_HOME")
    home = tmp_path / "user"
    home.mkdir()
    env = {**profiles(tmp_path, ports()), "HOME": str(home)}
    for var in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
        if xdg:
            env[var] = str(tmp_path / var.lower())
    root = tmp_path / "xdg_state_home" if xdg else home / ".local" / "state"
    full = {**os.environ, **env}
    for args in (["up", "srv"], ["down", "srv"]):
        r = subprocess.run([sys.executable, "-m", "llmctl", *args], env=full, capture_output=True, text=True,
                           timeout=120, umask=0o022)
        assert r.returncode == 0, r.stderr
    assert (root / "llmctl" / "state" / "srv.json").is_file() and (root / "llmctl" / "logs" / "srv.log").is_file()
    made = [root / "llmctl" / d for d in ("", "state", "run", "logs")]
    if not xdg:
        made += [home / ".local", home / ".local" / "state"]
    modes = {str(d): oct(stat.S_IMODE(d.stat().st_mode)) for d in made}
    assert set(modes.values()) == {"0o700"}, modes
