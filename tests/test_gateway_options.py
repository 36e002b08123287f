"""Options of `llmctl serve` end to end, each against a real `llmctl serve` (a subprocess, as a
user runs it) and real tiny llama-servers (SmolLM2): `/upstream/PROFILE/PATH` passthrough,
`--stop-on-exit all|none`, `--wait-timeout`, `--primary-return`. Each test runs its own gateway
under its own LLMCTL_HOME and stops it with Ctrl-C (SIGINT)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .util import cli, free_port, wait_for

pytestmark = [pytest.mark.engine]
SLOW = str(Path(__file__).parent / "helpers" / "slow_server.py")
IN_TERMINAL = str(Path(__file__).parent / "helpers" / "llmctl_in_terminal.py")
HI = [{"role": "user", "content": "Hi"}]


def small(model, **extra) -> str:
    fields = {"model": str(model), "port": free_port(), "ctx_size": 512, "threads": 1, **extra}
    return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"


class Served:
    """A running `llmctl serve`: its process, its stderr lines, its URL."""

    def __init__(self, proc: subprocess.Popen, lines: list[str], url: str) -> None:
        self.proc, self.lines, self.url = proc, lines, url

    def chat(self, model: str, **kw) -> httpx.Response:
        body = {"model": model, "messages": HI, "max_tokens": 2, **kw}
        return httpx.post(self.url + "/v1/chat/completions", json=body, timeout=120)

    def models(self) -> dict[str, dict]:
        data = httpx.get(self.url + "/v1/models", timeout=30).json()["data"]
        return {m["id"]: m["llmctl"] for m in data}

    def interrupt(self) -> None:
        """Ctrl-C: the gateway stops (what --stop-on-exit says) and exits 130."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(90) == 130, "".join(self.lines)


@contextlib.contextmanager
def serving(profiles: Path, *options: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, IN_TERMINAL, "-f", str(profiles), "serve", "--port", str(port),
                             *options], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, LLMCTL_GATEWAY_KEY=""))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or any(url + "/v1" in ln for ln in lines), 60, "the gateway's URL")
        assert proc.poll() is None, "".join(lines)
        yield Served(proc, lines, url)
    except BaseException:  # a test that failed midway: leave no server behind
        stop(proc)
        cli("-f", str(profiles), "down", "--all")
        raise
    finally:
        stop(proc)
        reader.join(5)


def stop(proc: subprocess.Popen) -> None:
    """Stop a gateway still running, as a user would (Ctrl-C), and for sure."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def states(config_file: Path) -> dict[str, str]:
    from llmctl import Supervisor, load_profiles

    return {e.name: e.state for e in Supervisor(load_profiles([str(config_file)])).status()}


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "llmctl.yaml"
    f.write_text(text)
    return f


# -- /upstream/PROFILE/PATH -------------------------------------------------------------------
def test_upstream_passes_any_request_to_the_profiles_server(tmp_path, smollm2, llama_server):
    """A stopped profile is started on demand; GET and POST reach its server as they are (its
    /props, /tokenize, /detokenize, even its 404); names that are not profiles are refused by
    the gateway itself."""
    f = write(tmp_path, f"profiles:\n  p: {small(smollm2)}\ntasks:\n  chat: {{profile: p}}\n")
    from llmctl import load_profiles

    server = load_profiles([str(f)]).profiles["p"].url
    with serving(f) as gw:
        assert states(f) == {"p": "stopped"}
        props = httpx.get(gw.url + "/upstream/p/props", timeout=120)
        assert props.status_code == 200 and props.headers["x-llmctl-profile"] == "p"
        assert props.json()["model_path"] == str(smollm2)  # llama-server's own answer
        assert states(f) == {"p": "running"}
        text = "Hello world, said the gateway."
        tokens = httpx.post(gw.url + "/upstream/p/tokenize", json={"content": text}, timeout=30)
        direct = httpx.post(server + "/tokenize", json={"content": text}, timeout=30)
        assert tokens.status_code == 200 and tokens.json() == direct.json() and len(tokens.json()["tokens"]) > 3
        back = httpx.post(gw.url + "/upstream/p/detokenize", json=tokens.json(), timeout=30)
        assert back.json()["content"].strip() == text
        missing = httpx.get(gw.url + "/upstream/p/no/such/path", timeout=30)
        assert missing.status_code == 404 and missing.headers["x-llmctl-profile"] == "p"  # the server's 404
        for name in ("nope", "chat"):  # no such profile; a task is not a profile
            r = httpx.get(gw.url + f"/upstream/{name}/props", timeout=30)
            assert r.status_code == 404 and "x-llmctl-profile" not in r.headers
            assert f"no profile named {name!r}" in r.json()["error"]["message"]
        gw.interrupt()
    assert states(f) == {"p": "stopped"}  # started by the gateway: stopped with it


# -- --stop-on-exit ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["all", "none"])
def test_stop_on_exit_all_or_none(tmp_path, smollm2, llama_server, policy):
    """`started` (the default) is covered in test_gateway_cli.py: here `all` stops the server
    that ran before the gateway too, `none` leaves even the one the gateway started."""
    f = write(tmp_path, f"profiles:\n  pre: {small(smollm2)}\n  demand: {small(smollm2)}\n")
    assert cli("-f", str(f), "up", "pre").returncode == 0
    try:
        with serving(f, "--stop-on-exit", policy) as gw:
            assert gw.chat("demand").status_code == 200
            assert gw.chat("pre").status_code == 200
            assert states(f) == {"pre": "running", "demand": "running"}
            said = {"all": "Ctrl-C stops it and every running server",
                    "none": "Ctrl-C stops it and leaves the servers running"}[policy]
            assert any(said in ln for ln in gw.lines), gw.lines
            gw.interrupt()
        left = "stopped" if policy == "all" else "running"
        assert states(f) == {"pre": left, "demand": left}, gw.lines
    finally:
        cli("-f", str(f), "down", "--all")


def test_stop_on_exit_must_be_a_known_policy(tmp_path):
    f = write(tmp_path, "profiles:\n  p: {model: x.gguf, port: 18999}\n")
    r = cli("-f", str(f), "serve", "--port", str(free_port()), "--stop-on-exit", "some")
    assert r.returncode == 2 and "expected one of started, all, none" in r.stderr


# -- --wait-timeout ---------------------------------------------------------------------------
def test_wait_timeout_gives_up_on_a_start_that_takes_longer(tmp_path, smollm2, llama_server):
    """A request waits for a start at most --wait-timeout seconds, then gets 503 naming the
    option; the start goes on. The server that is slow to start is tests/helpers/slow_server.py
    (healthy only after 10 minutes, on purpose); a real llama-server is served meanwhile."""
    slow = small(smollm2, binary=SLOW, env="{SLOW_SERVER: '--ready-after 600'}", start_timeout=900, stop_timeout=5)
    f = write(tmp_path, f"profiles:\n  late: {slow}\n  quick: {small(smollm2)}\n")
    assert cli("-f", str(f), "up", "quick").returncode == 0
    try:
        with serving(f, "--wait-timeout", "3") as gw:
            t0 = time.monotonic()
            r = gw.chat("late")
            waited = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert "giving up (serve --wait-timeout)" in r.json()["error"]["message"]
            assert 2.9 <= waited < 20, waited  # the option's 3 s, not the default 300
            assert gw.models()["late"]["state"] == "starting"  # the start itself goes on
            assert gw.chat("quick").status_code == 200
            gw.interrupt()
        assert states(f) == {"late": "stopped", "quick": "running"}  # a start under way is stopped too
    finally:
        cli("-f", str(f), "down", "--all")


# -- --primary-return -------------------------------------------------------------------------
def test_primary_return_brings_the_primary_back_after_a_members_idle_time(tmp_path, smollm2, llama_server):
    """In an exclusive group with a primary, a member without idle_ttl is stopped after
    --primary-return idle seconds and the primary is started again (the default is 60 s: the
    test waits at most 30)."""
    f = write(tmp_path, f"""
profiles:
  main: {small(smollm2, group="duo")}
  side: {small(smollm2, group="duo")}
groups:
  duo: {{exclusive: true, primary: main}}
""")
    with serving(f, "--primary-return", "2") as gw:
        assert gw.chat("main").status_code == 200
        r = gw.chat("side")
        used = time.monotonic()
        assert r.status_code == 200 and r.headers["x-llmctl-profile"] == "side"
        assert states(f) == {"main": "stopped", "side": "running"}
        assert gw.models()["side"]["idle_ttl"] == 2 and gw.models()["main"]["idle_ttl"] is None
        wait_for(lambda: states(f) == {"main": "running", "side": "stopped"}, 30, "the primary's return")
        assert time.monotonic() - used >= 1.9  # not before side was idle for --primary-return
        gw.interrupt()
    assert states(f) == {"main": "stopped", "side": "stopped"}
