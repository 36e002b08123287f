"""Hot reload of `llmctl serve` (issue 16 item 4): the pure diff of two configurations, then a real
`llmctl serve` subprocess with real llama-servers (SmolLM2) reloading its profile file on SIGHUP
and with --watch: added profiles served, removed ones 404 and drained then stopped, changed ones
restarted with their new settings, a broken file refused with the old profiles kept, and a reload
under load that drops no request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from .util import free_port, wait_for

SLOW = str(Path(__file__).parent / "helpers" / "slow_server.py")
HI = [{"role": "user", "content": "Hi"}]


def _config(tmp_path: Path, text: str):
    from llmctl import load_profiles

    f = tmp_path / "diff.yaml"
    f.write_text(text)
    return load_profiles([str(f)])


# -- the pure diff ----------------------------------------------------------------------------
def test_diff_names_added_removed_and_changed_profiles_only(tmp_path):
    from llmctl.gateway.reload import diff

    old = _config(tmp_path, """
profiles:
  a: {model: m.gguf, port: 9001, ctx_size: 512}
  b: {model: m.gguf, port: 9002}
  c: {model: m.gguf, port: 9003}
tasks:
  t: {profile: a}
""")
    new = _config(tmp_path, """
# a comment moves every line: where a profile is written is no change
profiles:
  c: {model: m.gguf, port: 9003}
  a: {model: m.gguf, port: 9001, ctx_size: 1024}
  d: {model: m.gguf, port: 9004}
tasks:
  t: {profile: a}
""")
    d = diff(old, new)
    assert (d.added, d.removed, d.changed, d.rest) == (("d",), ("b",), ("a",), False)
    assert d.describe() == "added: d; removed: b; changed: a"
    assert not diff(new, _config(tmp_path, "\n\n" + (tmp_path / "diff.yaml").read_text()))


def test_diff_sees_tasks_groups_and_defaults(tmp_path):
    from llmctl.gateway.reload import diff

    base = "profiles:\n  a: {model: m.gguf, port: 9001}\n"
    old = _config(tmp_path, base + "tasks:\n  t: {profile: a, max_tokens: 5}\n")
    assert diff(old, _config(tmp_path, base + "tasks:\n  t: {profile: a, max_tokens: 6}\n")).rest
    assert diff(old, _config(tmp_path, base + "tasks:\n  t: {profile: a, max_tokens: 5}\n"
                                       "defaults: {min_resident: 1}\n")).rest
    changed = diff(old, _config(tmp_path, base + "tasks:\n  t: {profile: a, max_tokens: 5}\n"
                                          "groups:\n  g: {exclusive: false}\n"))
    assert changed.rest and not (changed.added or changed.removed or changed.changed)


# -- a real `llmctl serve` --------------------------------------------------------------------
class Serve:
    """`llmctl -f FILE serve` in a subprocess, its stderr collected."""

    def __init__(self, file: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "llmctl", "-f", str(file), "serve", "--port",
                                      str(self.port), *extra], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=dict(os.environ, LLMCTL_GATEWAY_KEY=""))
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")),
                                       daemon=True)
        self.reader.start()
        wait_for(lambda: self.proc.poll() is not None or any(self.url in ln for ln in self.lines), 60, "serve")
        assert self.proc.poll() is None, self.log()
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def log(self) -> str:
        return "".join(self.lines)

    def reloads(self, word: str = "reload") -> int:
        return sum(word in ln for ln in self.lines)

    def sighup(self, word: str = "reload") -> None:
        """SIGHUP; wait until the log says the reload was done (or refused)."""
        before = self.reloads(word)
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.reloads(word) > before, 30, f"{word!r} in the log")

    def chat(self, model: str, **kw) -> httpx.Response:
        return self.http.post("/v1/chat/completions", json={"model": model, "messages": HI, "max_tokens": 2, **kw})

    def models(self) -> set[str]:
        return {m["id"] for m in self.http.get("/v1/models").json()["data"]}

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)


def _status() -> dict[str, str]:
    from llmctl import Supervisor

    return {e.name: e.state for e in Supervisor().status()}


def _stop_all() -> None:
    from llmctl import Supervisor

    Supervisor().stop(None)


def _profile(name: str, model: Path, port: int, ctx: int = 512) -> str:
    return f"  {name}: {{model: {model}, port: {port}, ctx_size: {ctx}, threads: 1}}\n"


@pytest.fixture
def served(tmp_path):
    """Start `serve`s through the returned function; each is stopped (with its servers) afterwards."""
    started: list[Serve] = []

    def start(file: Path, *extra: str) -> Serve:
        started.append(Serve(file, *extra))
        return started[-1]

    yield start
    for s in started:
        s.close()
    _stop_all()


@pytest.mark.engine
def test_sighup_adds_a_profile_and_drains_then_stops_a_removed_one(tmp_path, smollm2, llama_server, served):
    """"slow" (tests/helpers/slow_server.py: a piece every 0.1 s, on purpose) keeps a stream in
    flight across the reload, which a tiny model on a fast CPU might finish first."""
    f = tmp_path / "llmctl.yaml"
    slow = f"  slow: {{model: {smollm2}, port: {free_port()}, binary: {SLOW}, stop_timeout: 5}}\n"
    added = _profile("added", smollm2, free_port())
    f.write_text("profiles:\n" + slow)
    gw = served(f)
    with gw.http.stream("POST", "/v1/chat/completions", json={"model": "slow", "messages": HI, "max_tokens": 40,
                                                                "stream": True}) as stream:
        assert stream.status_code == 200
        pieces = stream.iter_lines()
        next(pieces)
        f.write_text("profiles:\n" + added)
        gw.sighup()
        assert "removed: slow" in gw.log() and "added: added" in gw.log()
        assert gw.chat("slow").status_code == 404
        assert _status()["slow"] == "running"  # its request is still in flight
        rest = [ln for ln in pieces if ln]
    assert rest[-1] == "data: [DONE]" and sum(ln.startswith("data: {") for ln in rest) >= 40
    wait_for(lambda: _status().get("slow") == "stopped", 30, "slow to be stopped once its stream ended")
    assert gw.models() == {"added"}
    answer = gw.chat("added")
    assert answer.status_code == 200 and answer.headers["x-llmctl-profile"] == "added"


def _n_ctx(gw: Serve, name: str) -> int:
    return gw.http.get(f"/upstream/{name}/props").json()["default_generation_settings"]["n_ctx"]


@pytest.mark.engine
def test_sighup_restarts_a_changed_profile_with_its_new_settings(tmp_path, smollm2, llama_server, served):
    f = tmp_path / "llmctl.yaml"
    port = free_port()
    f.write_text("profiles:\n" + _profile("a", smollm2, port, 512))
    gw = served(f)
    assert gw.chat("a").status_code == 200
    assert _n_ctx(gw, "a") == 512
    f.write_text("profiles:\n" + _profile("a", smollm2, port, 1024))
    gw.sighup()
    assert "changed: a" in gw.log()
    assert gw.chat("a").status_code == 200
    assert _n_ctx(gw, "a") == 1024


@pytest.mark.engine
def test_a_broken_file_is_refused_and_the_old_profiles_kept(tmp_path, smollm2, llama_server, served):
    f = tmp_path / "llmctl.yaml"
    good = "profiles:\n" + _profile("a", smollm2, free_port())
    f.write_text(good)
    gw = served(f)
    f.write_text(good + "  b: {model: x.gguf, port: not-a-port}\n")
    gw.sighup("refused")
    assert "llmctl.yaml:3" in gw.log() and "port" in gw.log()
    assert gw.models() == {"a"}
    assert gw.chat("a").status_code == 200


def test_watch_reloads_a_changed_file_without_a_signal(tmp_path, served):
    """No server starts: the profiles the gateway lists are enough to see the reload."""
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  a: {{model: a.gguf, port: {free_port()}}}\n")
    gw = served(f, "--watch")
    assert gw.models() == {"a"}
    f.write_text(f.read_text() + f"  b: {{model: b.gguf, port: {free_port()}}}\n")
    wait_for(lambda: gw.models() == {"a", "b"}, 20, "b to appear")
    assert "reloaded the profiles (a profile file changed): added: b" in gw.log()


@pytest.mark.engine
def test_a_reload_under_load_drops_no_request(tmp_path, smollm2, llama_server, served):
    """Four clients send short requests to "a" back to back while its file changes (ctx_size, and
    a profile added) and SIGHUP reloads it: "a" restarts under load, and every request succeeds."""
    f = tmp_path / "llmctl.yaml"
    port = free_port()
    f.write_text("profiles:\n" + _profile("a", smollm2, port, 512))
    gw = served(f)
    assert gw.chat("a").status_code == 200
    failures: list[str] = []
    done = {"n": 0}
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=gw.url, timeout=120) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/chat/completions", json={"model": "a", "messages": HI, "max_tokens": 2})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                done["n"] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: done["n"] >= 20, 60, "requests before the reload")
        f.write_text("profiles:\n" + _profile("a", smollm2, port, 1024) + _profile("b", smollm2, free_port()))
        gw.sighup()
        wait_for(lambda: "a: stopped" in gw.log(), 60, "a to be stopped after the reload")
        n = done["n"]
        wait_for(lambda: done["n"] >= n + 20, 120, "requests after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert failures == []
    assert _n_ctx(gw, "a") == 1024
    assert gw.log().count("a: starting") == 2


class Holder:
    """A server that answers /health and holds any other request until :meth:`release`, then
    closes the connection without an answer: a fake, on purpose (a real server that dies before
    answering), to hold a request at the head of its fallback chain for as long as the test needs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.holding = threading.Event()
        self.released = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and (data := conn.recv(65536)):
                head += data
            if head.startswith(b"GET /health "):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            self.holding.set()
            self.released.wait(120)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.sock.close()


@pytest.mark.engine
def test_a_fallback_removed_while_a_request_walks_its_chain_is_passed_over(tmp_path, smollm2, llama_server, served):
    """Task t: first (held, then closed unanswered), second, third. While the request is held at
    first, a reload removes second: the walk goes on to third as if second had never been in the
    chain (it used to be a 500, a KeyError on the removed profile)."""
    holder = Holder()
    f = tmp_path / "llmctl.yaml"
    first = f'  first: {{engine: remote, url: "{holder.url}"}}\n'
    third = _profile("third", smollm2, free_port())
    f.write_text("profiles:\n" + first + _profile("second", smollm2, free_port()) + third +
                 "tasks:\n  t: {profile: first, fallback: [second, third], max_tokens: 2}\n")
    try:
        gw = served(f)
        answer: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answer.append(gw.chat("t")))
        asking.start()
        assert holder.holding.wait(60), gw.log()
        f.write_text("profiles:\n" + first + third + "tasks:\n  t: {profile: first, fallback: [third], "
                     "max_tokens: 2}\n")
        gw.sighup()
        assert "removed: second" in gw.log()
        holder.release()
        asking.join(180)
    finally:
        holder.close()
    assert answer and answer[0].status_code == 200, answer[0].text if answer else gw.log()
    assert answer[0].headers["x-llmctl-profile"] == "third"
    assert "second" not in _status() or _status()["second"] == "stopped"  # never started
