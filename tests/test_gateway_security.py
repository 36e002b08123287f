"""The gateway against what a web page, a greedy client and a slow one can do: each test runs a
real `llmctl serve` (a subprocess, as users run it) in front of real llama-servers and attacks it
over HTTP or a raw socket.

Two profiles serve the module, both started up front: "open" (no key) and "locked" (its server
wants an API key, from api_key_env). The module's gateway is keyless on loopback with today's
default options; tests that need other options start their own."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from .util import free_port, wait_for

pytestmark = [pytest.mark.engine]

GW_KEY = "gw-" + os.urandom(6).hex()
BACKEND_KEY = "sk-backend-" + os.urandom(6).hex()
KEY_ENV = "LLMCTL_TEST_SECURITY_BACKEND_KEY"
CHAT = {"model": "open", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
MIB = 1 << 20


@dataclass
class Serve:
    """One `llmctl serve` subprocess; its stderr is collected in ``lines``."""

    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> Serve:
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()
        wait_for(lambda: any(f"{self.url}/v1" in ln for ln in self.lines) or self.proc.poll() is not None,
                 60, "the gateway's URL on stderr")
        assert self.proc.poll() is None, "".join(self.lines)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Env:
    root: Path
    config_file: Path
    home: Path
    gw: Serve  #: keyless, loopback, default options

    def serve(self, *args: str, key: str = "") -> Serve:
        """Start (not yet ready) another gateway on a free port, with ``args``."""
        port = free_port()
        env = dict(os.environ, LLMCTL_HOME=str(self.home), LLMCTL_GATEWAY_KEY=key, **{KEY_ENV: BACKEND_KEY})
        proc = subprocess.Popen([sys.executable, "-m", "llmctl", "-f", str(self.config_file), "serve",
                                 "--port", str(port), "--stop-on-exit", "none", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        return Serve(proc, port)


@pytest.fixture(scope="module")
def env(tmp_path_factory, smollm2, llama_server):
    from llmctl import Supervisor, load_profiles

    root = tmp_path_factory.mktemp("gateway-security")
    f = root / "llmctl.yaml"
    f.write_text(f"""
profiles:
  open: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1, start_timeout: 120}}
  locked: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1, start_timeout: 120,
           api_key_env: {KEY_ENV}}}
""")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMCTL_HOME", str(root / "home"))
        mp.setenv(KEY_ENV, BACKEND_KEY)
        sup = Supervisor(load_profiles([str(f)]))
        env = Env(root, f, root / "home", None)  # type: ignore[arg-type]
        try:
            sup.start(["open", "locked"])
            env.gw = env.serve().wait_ready()
            yield env
        finally:
            if env.gw is not None:
                env.gw.stop()
            sup.stop(None)


@pytest.fixture
def gateways():
    """Gateways a test starts; stopped after it."""
    started: list[Serve] = []
    yield started
    for s in started:
        s.stop()


def start(gateways: list, env: Env, *configs: tuple) -> list[Serve]:
    """Start one gateway per (args, key) at once, then wait for all."""
    procs = [env.serve(*args, key=key) for args, key in configs]
    gateways.extend(procs)
    return [p.wait_ready() for p in procs]


def get(url: str, host: str, path: str = "/v1/models", **kw) -> httpx.Response:
    return httpx.get(url + path, headers={"host": host, **kw.pop("headers", {})}, timeout=30, **kw)


def raw_exchange(port: int, head: bytes, timeout: float = 10.0) -> bytes:
    """Send ``head`` on a fresh connection, then read until the server closes it (or the
    timeout, which fails the test: the server kept the connection open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        got = b""
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"the gateway neither answered nor closed in {timeout} s: {got[:200]!r}"
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                pytest.fail(f"the gateway neither answered nor closed in {timeout} s: {got[:200]!r}")
            if not chunk:
                return got
            got += chunk


def test_a_loopback_gateway_answers_loopback_host_names_only(env):
    """DNS rebinding: a page on evil.example makes its name resolve to 127.0.0.1 and calls the
    gateway; the browser then sends `Host: evil.example:PORT`, which must be refused."""
    url, port = env.gw.url, env.gw.port
    for bad in ("evil.example", f"evil.example:{port}", f"0.0.0.0:{port}", f"127.0.0.1.nip.io:{port}",
                "localhost.evil.example", f"{port}"):
        for path in ("/v1/models", "/health", "/upstream/open/props"):
            r = get(url, bad, path)
            assert r.status_code == 403, (bad, path, r.status_code, r.text[:200])
            err = r.json()["error"]
            assert "Host" in err["message"] and "--allow-host" in err["message"], err
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"host": bad}, timeout=30)
        assert r.status_code == 403, (bad, r.text[:200])
    for good in ("localhost", f"localhost:{port}", f"LOCALHOST:{port}", f"127.0.0.1:{port}", "127.0.0.2",
                 f"[::1]:{port}"):
        r = get(url, good)
        assert r.status_code == 200 and {m["id"] for m in r.json()["data"]} == {"open", "locked"}, (good, r.text)


def test_allow_host_adds_names_and_narrows_a_wide_bind(env, gateways):
    """--allow-host: on loopback a name added to the loopback ones; bound beyond loopback (with
    a key) every Host is answered as before, unless --allow-host names the ones to answer."""
    auth = {"authorization": f"Bearer {GW_KEY}"}
    local, wide_named, wide = start(gateways, env, (("--allow-host", "llm.test", "--allow-host", "Box.Test:8000"), ""),
                                    (("--host", "0.0.0.0", "--allow-host", "llm.test"), GW_KEY),
                                    (("--host", "0.0.0.0"), GW_KEY))
    for host in (f"llm.test:{local.port}", "box.test", "localhost"):
        assert get(local.url, host).status_code == 200, host
    assert get(local.url, "other.test").status_code == 403
    for host in (f"llm.test:{wide_named.port}", f"127.0.0.1:{wide_named.port}"):
        assert get(wide_named.url, host, headers=auth).status_code == 200, host
    assert get(wide_named.url, "other.test", headers=auth).status_code == 403
    assert get(wide.url, f"other.test:{wide.port}", headers=auth).status_code == 200
    assert get(wide.url, "other.test").status_code == 401  # the key still guards it


def test_cross_site_simple_posts_are_refused_and_the_openai_client_still_works(env):
    """A page may POST text/plain, a form or no type at all to any site without asking the
    browser first (no CORS preflight); the gateway must not take such a body as a call."""
    url = env.gw.url
    body = json.dumps(CHAT).encode()
    for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", None):
        headers = {"content-type": ctype} if ctype else {}
        r = httpx.post(url + "/v1/chat/completions", content=body, headers=headers, timeout=60)
        assert r.status_code == 415, (ctype, r.status_code, r.text[:200])
        assert "application/json" in r.json()["error"]["message"]
        r = httpx.post(url + "/upstream/open/completion", content=b'{"prompt": "Hi", "n_predict": 2}',
                       headers=headers, timeout=60)
        assert r.status_code == 415, (ctype, r.status_code, r.text[:200])
    for base in (url, f"http://localhost:{env.gw.port}"):
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        answer = c.chat.completions.create(**CHAT)
        assert answer.choices[0].message.content is not None
    r = httpx.post(url + "/upstream/open/tokenize", json={"content": "Hello"}, timeout=60)
    assert r.status_code == 200 and r.json()["tokens"], r.text


def test_upstream_adds_a_server_key_only_for_callers_the_gateway_authenticated(env, gateways):
    """/upstream adds the server's own key. On a keyless gateway any local page or program
    would get it for free, so /upstream to a keyed profile is refused there; with a gateway key
    the caller must send it. No CORS grant is relayed (llama-server grants every origin)."""
    r = httpx.get(env.gw.url + "/upstream/locked/props", timeout=60)
    assert r.status_code == 403, r.text[:200]
    message = r.json()["error"]["message"]
    assert "LLMCTL_GATEWAY_KEY" in message and "--api-key-file" in message and BACKEND_KEY not in r.text
    assert httpx.post(env.gw.url + "/upstream/locked/tokenize", json={"content": "Hi"}, timeout=60).status_code == 403
    evil = {"origin": "http://evil.example"}
    r = httpx.get(env.gw.url + "/upstream/open/props", headers=evil, timeout=60)
    assert r.status_code == 200 and "default_generation_settings" in r.json()
    for resp in (r, httpx.get(env.gw.url + "/v1/models", headers=evil),
                 httpx.options(env.gw.url + "/upstream/open/completion",
                               headers={**evil, "access-control-request-method": "POST"})):
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")], resp.headers

    (keyed,) = start(gateways, env, ((), GW_KEY))
    assert httpx.get(keyed.url + "/upstream/locked/props", timeout=60).status_code == 401
    r = httpx.get(keyed.url + "/upstream/locked/props", headers={"authorization": f"Bearer {GW_KEY}"}, timeout=60)
    assert r.status_code == 200 and "default_generation_settings" in r.json() and BACKEND_KEY not in r.text


def test_a_body_over_the_limit_gets_413_before_it_is_read(env, gateways):
    """A client announcing a huge body, or streaming one without end, must get 413 at once:
    the gateway must not wait for (or hold) the whole body."""
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (32 * MIB + 1))
    answer = raw_exchange(env.gw.port, head)  # only the headers are sent: no body ever comes
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"--max-body-size" in answer
    filler = json.dumps({"model": "open", "pad": "x" * MIB}).encode()  # under the limit: read and judged
    r = httpx.post(env.gw.url + "/v1/chat/completions", content=filler,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]

    (small,) = start(gateways, env, (("--max-body-size", "1MiB"), ""))
    sent = stream_until_answer(small.port, limit=64 * MIB)
    assert sent[1].startswith(b"HTTP/1.1 413 "), sent[1][:200]
    assert sent[0] < 16 * MIB, f"the gateway took {sent[0]} bytes of a chunked body before saying 413"


def stream_until_answer(port: int, limit: int) -> tuple[int, bytes]:
    """POST a chunked JSON body without end; return (bytes sent, the answer) once one comes."""
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    sent, got = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        while sent < limit:
            readable = select.select([s], [], [], 0)[0]
            if readable:
                break
            try:
                s.sendall(chunk)
            except OSError:  # closed after answering: read what came
                break
            sent += 64 * 1024
        try:
            while chunk := s.recv(65536):
                got += chunk
        except OSError:
            pass
    return sent, got


def test_slow_or_silent_request_headers_are_cut_off(env, gateways):
    """Slowloris: a client that sends its headers a byte at a time, or nothing at all, must not
    hold a connection past --header-timeout; a kept-alive client idle between requests is
    not cut off by it."""
    (gw,) = start(gateways, env, (("--header-timeout", "1"), ""))
    for trickle in (True, False):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            t0 = time.monotonic()
            closed = None
            if trickle:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while closed is None and time.monotonic() - t0 < 8:
                try:
                    if trickle:
                        s.sendall(b"X")
                    if select.select([s], [], [], 0.2)[0] and s.recv(4096) == b"":
                        closed = time.monotonic() - t0
                except OSError:
                    closed = time.monotonic() - t0
            assert closed is not None and 0.8 < closed < 4, (trickle, closed)
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        assert c.get("/health").status_code == 200
        time.sleep(1.5)  # idle on the kept-alive connection, longer than the header timeout
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 200


def test_deep_or_broken_json_is_a_400_not_a_500(env):
    """JSON nested 100 000 deep (Python's parser gives up with RecursionError), bytes that are
    not UTF-8, or a cut-off body: the client's fault, so 400 with a reason."""
    deep = b"[" * 100_000 + b"]" * 100_000
    bodies = [deep, b'{"model": "open", "messages": ' + deep + b"}",
              b'{"model": "open", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
              b'{"model": "open", "messages": [', b""]
    for endpoint in ("/v1/chat/completions", "/v1/embeddings"):
        for body in bodies:
            r = httpx.post(env.gw.url + endpoint, content=body, headers={"content-type": "application/json"},
                           timeout=60)
            assert r.status_code == 400, (endpoint, body[:40], r.status_code, r.text[:200])
            assert r.json()["error"]["type"] == "invalid_request_error"
