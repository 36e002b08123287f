"""End to end with the real llama-server and the real tiny models, through the real CLI."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import stat
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from .util import cli, port_is_free, wait_for

pytestmark = [pytest.mark.engine]


def profiles(tmp_path: Path, text: str) -> dict:
    f = tmp_path / "llmctl.yaml"
    f.write_text(text)
    return {"LLMCTL_PROFILES": str(f)}


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except OSError as exc:
        return getattr(exc, "code", 0) or 0


def status_json(env) -> list[dict]:
    r = cli("status", "--json", env=env)
    return json.loads(r.stdout)


def test_demo_up_status_logs_restart_down(tmp_path, smollm2, gemma, ports, llama_server):
    """The demo profile's models, imported by name; `up heavy light` returns only once both
    answer 200; status shows them; they outlive the terminal; `down` frees everything."""
    for src, name in ((gemma, "gemma3-270m-q4_k_m"), (smollm2, "smollm2-135m-instruct-q4_1")):
        r = cli("import", str(src), "--as", name, "--link")
        assert r.returncode == 0, r.stderr
    demo = (Path(__file__).resolve().parents[1] / "profiles" / "demo.yaml").read_text()
    ph, pl = ports(), ports()
    env = profiles(tmp_path, demo.replace("18180", str(ph)).replace("18181", str(pl)))

    # `up` from a real terminal (a pty) whose shell then stays; the terminal is then closed,
    # which hangs up the shell's session. The servers must live on.
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env)
        os.execv("/bin/bash", ["bash", "-c", f"{sys.executable} -m llmctl up heavy light; "
                                             "echo UP-EXIT=$?; sleep 120"])
    out = b""
    deadline = time.monotonic() + 180
    while b"UP-EXIT=" not in out and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            out += chunk
    wait_for(lambda: psutil.Process(pid).cmdline() == ["sleep", "120"],  # bash execs its last command
             what="the shell waiting on its terminal")
    os.close(fd)  # the terminal goes away: SIGHUP to its session
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert "UP-EXIT=0" in text, text
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 1  # the shell died of the hang-up
    assert health(ph) == 200 and health(pl) == 200  # ...and the servers did not
    time.sleep(0.5)
    entries = {e["name"]: e for e in status_json(env)}
    for name, port, model in (("heavy", ph, "gemma3-270m-q4_k_m"), ("light", pl, "smollm2-135m-instruct-q4_1")):
        e = entries[name]
        assert e["state"] == "running" and e["health"] == "ok"
        assert e["port"] == port and e["model"] == model and e["url"] == f"http://127.0.0.1:{port}"
        assert psutil.Process(e["pid"]).is_running() and e["uptime_s"] >= 0 and e["restarts"] == 0
        assert "llama-server" in psutil.Process(e["pid"]).cmdline()[0]
    assert cli("status", env=env).returncode == 0

    # already running: said so, exit 0
    r = cli("up", "light", env=env)
    assert r.returncode == 0 and "already running" in r.stdout

    r = cli("logs", "light", "-n", "5", env=env)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 5

    old = entries["light"]["pid"]
    r = cli("restart", "light", env=env)
    assert r.returncode == 0, r.stderr
    new = {e["name"]: e for e in status_json(env)}["light"]["pid"]
    assert new != old and not psutil.pid_exists(old)

    pids = [e["pid"] for e in status_json(env)]
    tree = [p for pid in pids for p in [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)]
    r = cli("down", env=env)
    assert r.returncode == 0 and "heavy: stopped" in r.stdout and "light: stopped" in r.stdout
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert port_is_free(ph) and port_is_free(pl)
    assert {e["state"] for e in status_json(env)} == {"stopped"}
    r = cli("status", env=env)
    assert r.returncode == 3
    assert cli("down", env=env).returncode == 0  # idempotent


def test_bad_inputs_start_nothing(tmp_path, smollm2, ports, llama_server):
    p1, p2 = ports(), ports()
    base = f"profiles:\n  ok: {{model: {smollm2}, port: {p1}}}\n"
    cases = [
        # missing model file
        (base + f"  nomodel: {{model: /nonexistent/m.gguf, port: {p2}}}\n", ["ok", "nomodel"], 6,
         "model file /nonexistent/m.gguf does not exist"),
        # unknown profile name among good ones
        (base, ["ok", "nosuch"], 4, "no profile named 'nosuch'"),
        # two profiles on one port
        (base + f"  twin: {{model: {smollm2}, port: {p1}}}\n", ["ok"], 4, "is also used by profile 'ok'"),
        # unknown key
        (base + f"  typo: {{model: {smollm2}, port: {p2}, gpu_layer: 1}}\n", ["ok"], 4,
         "did you mean 'gpu_layers'?"),
    ]
    for text, names, code, message in cases:
        env = profiles(tmp_path, text)
        r = cli("up", *names, env=env)
        assert r.returncode == code, (message, r.stderr)
        assert message in r.stderr
        assert port_is_free(p1) and port_is_free(p2)
        assert not (Path(os.environ["LLMCTL_HOME"]) / "state" / "ok.json").exists()


def test_port_held_by_foreign_process_is_refused_with_holder(tmp_path, smollm2, ports, llama_server):
    port = ports()
    env = profiles(tmp_path, f"profiles:\n  light: {{model: {smollm2}, port: {port}}}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = cli("up", "light", env=env)
    assert r.returncode == 7
    assert f"port {port}" in r.stderr and f"pid {os.getpid()}" in r.stderr
    assert not (Path(os.environ["LLMCTL_HOME"]) / "state" / "light.json").exists()


def test_server_that_fails_to_start_reports_reason_and_log(tmp_path, smollm2, ports, llama_server):
    port = ports()
    env = profiles(tmp_path, f"profiles:\n  broken:\n    model: {smollm2}\n    port: {port}\n"
                             f"    args: {{no-such-flag-xyz: 1}}\n")
    t0 = time.monotonic()
    r = cli("up", "broken", env=env)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 8, r.stderr
    assert "broken failed to start" in r.stderr and "while starting" in r.stderr
    assert "no-such-flag-xyz" in r.stderr  # from the server's own log lines
    assert "llmctl logs broken" in r.stderr
    assert [e["state"] for e in status_json(env)] == ["failed"]


def test_api_key_stays_out_of_argv_and_output(tmp_path, smollm2, ports, llama_server):
    port = ports()
    secret = "sk-test-" + os.urandom(8).hex()
    env = profiles(tmp_path, f"profiles:\n  keyed: {{model: {smollm2}, port: {port}, api_key_env: TEST_LLM_KEY}}\n")
    env["TEST_LLM_KEY"] = secret
    r = cli("up", "keyed", env=env)
    assert r.returncode == 0, r.stderr
    try:
        [e] = status_json(env)
        proc = psutil.Process(e["pid"])
        assert secret not in " ".join(proc.cmdline())
        assert "TEST_LLM_KEY" not in proc.environ()
        home = Path(os.environ["LLMCTL_HOME"])
        key_file = home / "run" / "keyed.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        for f in list((home / "state").iterdir()) + list((home / "run").glob("*.json")):
            assert secret not in f.read_text()
        assert secret not in cli("status", "--json", env=env).stdout
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=5)
        assert ei.value.code == 401
        req.add_header("Authorization", f"Bearer {secret}")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    finally:
        assert cli("down", "keyed", env=env).returncode == 0
    assert not (Path(os.environ["LLMCTL_HOME"]) / "run" / "keyed.key").exists()


def test_failed_up_leaves_no_key_file(tmp_path, smollm2, ports):
    """The key file is written only by the keeper, just before the server starts: an `up` that
    fails before that (here: the port is held by another program) leaves none."""
    import socket

    port = ports()
    env = profiles(tmp_path, f"profiles:\n  keyed: {{model: {smollm2}, port: {port}, api_key_env: TEST_LLM_KEY}}\n")
    env["TEST_LLM_KEY"] = "sk-test-" + os.urandom(8).hex()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        r = cli("up", "keyed", env=env)
    assert r.returncode == 7, r.stderr
    assert not (Path(os.environ["LLMCTL_HOME"]) / "run" / "keyed.key").exists()


def test_core_works_without_the_cli(tmp_path, smollm2, ports, llama_server):
    from llmctl import Supervisor, load_profiles

    port = ports()
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {port}, ctx_size: 1024}}\n")
    sup = Supervisor(load_profiles([str(f)]))
    [res] = sup.start(["light"])
    try:
        assert res.outcome == "started" and health(port) == 200
        [st] = sup.status(["light"])
        assert st.state == "running" and "-c" in psutil.Process(st.pid).cmdline()
    finally:
        sup.stop(["light"])
    assert port_is_free(port)
