"""Remote profiles (``engine: remote``): servers llmctl reaches but does not start. One real
llama-server (SmolLM2, with an API key from a file) is started by this module as a plain
process, as someone else's server would be; the profiles point at it by URL. `status` probes it,
`up`/`down` skip it with a note, `run --task` falls back to it and from it, the gateway proxies
to it, the key goes only in the Authorization header, and https is verified unless the profile
says ``verify: false`` (a TLS relay made with the stdlib ssl module, in front of the real server)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .util import cli, end_process, free_port, wait_for

KEY = "remote-test-key-5b1e9c"  #: the server's key: never in argv or output
KEY_ENV = "LLMCTL_TEST_REMOTE_KEY"


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2, llama_server):
    """A llama-server llmctl did not start (its key from a file), stopped in a finally."""
    d = tmp_path_factory.mktemp("remote")
    keyfile = d / "key"
    keyfile.write_text(KEY + "\n")
    port = free_port()
    log = open(d / "server.log", "wb")
    proc = subprocess.Popen([llama_server, "-m", str(smollm2), "--host", "127.0.0.1", "--port", str(port),
                             "-c", "512", "-t", "1", "--api-key-file", str(keyfile)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or _answers(url), 120, "the remote llama-server")
        assert proc.poll() is None, (d / "server.log").read_text()[-2000:]
        yield url
    finally:
        end_process(proc)
        log.close()


@pytest.fixture
def files(tmp_path, server, monkeypatch):
    """A profile file with the remote server, a dead remote, a local profile never started, and
    a local profile whose port is the running server's (answering, not started by llmctl)."""
    port = server.rsplit(":", 1)[1]
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"""
profiles:
  far: {{engine: remote, url: "{server}", api_key_env: {KEY_ENV}, description: "someone else's server"}}
  gone: {{engine: remote, url: "http://127.0.0.1:{free_port()}"}}
  near: {{model: /nowhere/m.gguf, port: {free_port()}}}
  there: {{model: /nowhere/m.gguf, port: {port}, api_key_env: {KEY_ENV}}}
tasks:
  out: {{profile: near, fallback: [far], max_tokens: 4}}
  back: {{profile: gone, fallback: [there], max_tokens: 4}}
""")
    monkeypatch.setenv("LLMCTL_PROFILES", str(f))
    monkeypatch.setenv(KEY_ENV, KEY)
    return f


def _no_key(*texts: str) -> None:
    for t in texts:
        assert KEY not in t


def test_status_probes_a_remote_server_running_with_latency_and_unreachable_when_down(files):
    r = cli("status", "--json", "far", "gone")
    _no_key(r.stdout, r.stderr)
    rows = {e["name"]: e for e in json.loads(r.stdout)}
    far, gone = rows["far"], rows["gone"]
    assert far["state"] == "running" and far["engine"] == "remote" and far["latency_ms"] > 0
    assert far["pid"] is None and far["url"].startswith("http://127.0.0.1:") and far["health"] == "ok"
    assert gone["state"] == "unreachable" and gone["latency_ms"] is None and "cannot reach" in gone["message"]
    assert r.returncode == 3  # not all asked-for profiles are running
    assert cli("status", "far").returncode == 0


def test_up_and_down_skip_a_remote_profile_with_a_note(files, llmctl_home):
    r = cli("up", "far", "gone")
    assert r.returncode == 0, r.stderr
    assert "far: a remote server" in r.stdout and "llmctl does not start it; it answers" in r.stdout
    assert "gone: a remote server" in r.stdout and "unreachable" in r.stdout
    from llmctl.paths import Paths

    assert not Paths.from_env().state_file("far").exists()  # nothing recorded: nothing was started
    r = cli("down", "far")
    assert r.returncode == 0 and "llmctl does not stop it" in r.stdout
    assert json.loads(cli("status", "--json", "far").stdout)[0]["state"] == "running"  # still there
    _no_key(r.stdout, r.stderr)


def test_run_task_falls_back_from_a_dead_local_server_to_a_remote_one_and_back(files):
    r = cli("run", "--task", "out", "--json", "Say hi")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert (res["profile"], res["mode"], res["engine"]) == ("far", "server", "remote") and res["tokens_out"]
    assert "near: stopped" in r.stderr and "using far (server mode, fallback)" in r.stderr
    r = cli("run", "--task", "back", "--json", "Say hi")  # the remote one is down: a local one answers
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["profile"] == "there" and "gone: unreachable" in r.stderr
    r = cli("run", "--profile", "far", "--mode", "cli", "Hi")
    assert r.returncode != 0 and "remote server" in r.stderr and "--mode server" in r.stderr
    _no_key(r.stdout, r.stderr)


def test_a_remote_key_goes_in_the_header_and_never_in_output(files, tmp_path):
    r = cli("run", "--profile", "far", "--json", "Hi", "--set", "max_tokens=2")
    assert r.returncode == 0, r.stderr  # the server checks the key: it was sent
    _no_key(r.stdout, r.stderr)
    dry = cli("run", "--profile", "far", "--dry-run", "Hi")
    assert dry.returncode == 0 and "Bearer ***" in dry.stdout
    _no_key(dry.stdout, dry.stderr)
    wrong = cli("run", "--profile", "far", "Hi", env={KEY_ENV: "not-the-key"})
    assert wrong.returncode != 0 and "401" in wrong.stderr
    assert "not-the-key" not in wrong.stdout + wrong.stderr
    unset = cli("run", "--profile", "far", "Hi", env={KEY_ENV: ""})
    assert unset.returncode != 0 and KEY_ENV in unset.stderr


def test_profile_checks_for_remote(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("""
profiles:
  a: {engine: remote, url: "ftp://x", gpu_layers: 5, health: ping}
  b: {engine: remote}
  c: {model: m.gguf, port: 9000, url: "http://x:1"}
  d: {engine: remote, url: "http://u:p@x:8080"}
  e: {engine: remote, url: "https://x/v1"}
  ok: {engine: remote, url: "https://x:8443/", model: served-name, verify: false, health: /ready}
""")
    r = cli("-f", str(f), "profiles", "validate")
    assert r.returncode != 0
    for where, what in [("a.url", "http:// or https://"), ("a.gpu_layers", "not for `engine: remote`"),
                        ("a.health", "starting with /"), ("b.url", "missing required key"),
                        ("c.url", "only for `engine: remote`"), ("d.url", "no credentials"),
                        ("e.url", "without /v1")]:
        assert any(f"profiles.{where}:" in ln and what in ln for ln in r.stderr.splitlines()), (where, r.stderr)
    assert "profiles.ok" not in r.stderr
    from llmctl.profiles.schema import Profile

    p = Profile(name="ok", engine="remote", url="https://x:8443/")
    assert (p.url, p.port, p.model, p.verify) == ("https://x:8443", 8443, "", True)


# -- https --------------------------------------------------------------------------------
def _cert(d: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no self-signed certificate to test with")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


class TlsRelay:
    """TLS in front of the real server: each connection is unwrapped and relayed byte for byte."""

    def __init__(self, cert: Path, key: Path, upstream: str) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        host, port = upstream.split("//")[1].split(":")
        self.upstream = (host, int(port))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            conn.close()
            return
        up = socket.create_connection(self.upstream)
        t = threading.Thread(target=self._pump, args=(up, tls), daemon=True)
        t.start()
        self._pump(tls, up)
        t.join(30)
        tls.close()
        up.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.stopping = True
        self.sock.close()


def test_https_with_a_self_signed_certificate_is_refused_unless_verify_false(tmp_path, server, monkeypatch):
    cert, key = _cert(tmp_path)
    relay = TlsRelay(cert, key, server)
    try:
        f = tmp_path / "tls.yaml"
        f.write_text(f"""
profiles:
  strict: {{engine: remote, url: "https://127.0.0.1:{relay.port}", api_key_env: {KEY_ENV}}}
  trusting: {{engine: remote, url: "https://127.0.0.1:{relay.port}", api_key_env: {KEY_ENV}, verify: false}}
""")
        env = {"LLMCTL_PROFILES": str(f), KEY_ENV: KEY}
        rows = {e["name"]: e for e in json.loads(cli("status", "--json", env=env).stdout)}
        assert rows["strict"]["state"] == "unreachable" and "did not verify" in rows["strict"]["message"]
        assert rows["trusting"]["state"] == "running"
        r = cli("run", "--profile", "strict", "--mode", "server", "Hi", env=env)
        assert r.returncode != 0 and "verify: false" in r.stderr
        r = cli("run", "--profile", "trusting", "--json", "Hi", "--set", "max_tokens=2", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["url"].startswith("https://")
        _no_key(r.stdout, r.stderr)
        import openai

        with _gateway(env) as url:  # the gateway checks certificates the same way
            c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
            a = c.chat.completions.create(model="trusting", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
            assert a.usage.completion_tokens <= 2
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model="strict", messages=[{"role": "user", "content": "Hi"}])
            assert err.value.status_code == 503 and "did not verify" in str(err.value)
    finally:
        relay.close()


# -- the gateway --------------------------------------------------------------------------
@contextlib.contextmanager
def _gateway(env: dict[str, str] | None = None):
    """`llmctl serve` as a subprocess (no gateway key, loopback); yields its /v1 URL, then Ctrl-C
    (exit 130) and the gateway's stdout and stderr must not hold the server's key."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "serve", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, LLMCTL_GATEWAY_KEY="", **(env or {})))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_for(lambda: proc.poll() is not None or any(url in ln for ln in lines), 60, "the gateway")
        assert proc.poll() is None, "".join(lines)
        yield url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        reader.join(5)
        _no_key(proc.stdout.read(), "".join(lines))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_gateway_proxies_to_a_remote_profile(files):
    import openai

    with _gateway() as url:
        c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        a = c.chat.completions.with_raw_response.create(model="far", max_tokens=2,
                                                        messages=[{"role": "user", "content": "Hi"}])
        assert a.headers["x-llmctl-profile"] == "far" and a.parse().usage.completion_tokens <= 2
        b = c.chat.completions.with_raw_response.create(model="out", messages=[{"role": "user", "content": "Hi"}])
        assert b.headers["x-llmctl-profile"] == "far"  # the local one cannot start (no model): fallback
        with pytest.raises(openai.APIStatusError) as err:  # the dead remote: the probe's reason, 503
            c.chat.completions.create(model="gone", messages=[{"role": "user", "content": "Hi"}])
        assert err.value.status_code == 503 and "unreachable" in str(err.value)
        models = {m.id for m in c.models.list().data}
        assert {"far", "gone", "out"} <= models

def test_the_readme_example_of_a_remote_profile_validates(tmp_path):
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"### Servers llmctl does not start.*?```yaml\n(.*?)```", text, re.S)
    assert m, "README.md has no example of `engine: remote`"
    f = tmp_path / "remote.yaml"
    f.write_text(m.group(1))
    r = cli("-f", str(f), "profiles", "validate")
    assert r.returncode == 0 and "2 profile(s), 1 task(s)" in r.stdout, r.stderr


def test_bench_measures_a_remote_server_and_skips_its_cli_mode(files):
    r = cli("bench", "far", "--runs", "1", "--max-tokens", "4", "--prompt-words", "10", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["mode"]: row for row in json.loads(r.stdout)}
    assert rows["server"]["runs"] == 1 and rows["server"]["gen_tokens"] and rows["server"]["source"] == "server"
    assert rows["cli"]["runs"] == 0 and "no cli mode" in rows["cli"]["error"]
    _no_key(r.stdout, r.stderr)


def test_embed_through_a_remote_server(tmp_path, smollm2, llama_server, monkeypatch):
    """A second remote server, started with --embeddings (an embeddings-only server)."""
    port = free_port()
    log = open(tmp_path / "embed.log", "wb")
    proc = subprocess.Popen([llama_server, "-m", str(smollm2), "--host", "127.0.0.1", "--port", str(port),
                             "-c", "512", "-t", "1", "--embeddings", "--pooling", "mean"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None or _answers(url), 120, "the embeddings server")
        assert proc.poll() is None, (tmp_path / "embed.log").read_text()[-2000:]
        f = tmp_path / "e.yaml"
        f.write_text(f"profiles:\n  vec: {{engine: remote, url: '{url}', embeddings: true}}\n"
                     f"  other: {{engine: remote, url: 'http://127.0.0.1:{free_port()}'}}\n")
        monkeypatch.setenv("LLMCTL_PROFILES", str(f))
        r = cli("embed", "--json", "one text", "another")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["profile"] == "vec" and out["count"] == 2 and out["dimensions"] > 0
        r = cli("embed", "--profile", "other", "x")  # named: a remote may embed; this one is down
        assert r.returncode == 11 and "cannot reach" in r.stderr and "llmctl status other" in r.stderr
    finally:
        end_process(proc)
        log.close()


def test_the_health_path_and_the_fallback_for_servers_without_one(files, tmp_path, server):
    """A server without /health (a stdlib HTTP server that answers only /v1/models: a stand-in for
    OpenAI-compatible servers that have none) is probed on /v1/models; a `health:` path is used as
    written."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class ModelsOnly(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = b'{"data": [{"id": "m"}]}'
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ModelsOnly)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        f = tmp_path / "h.yaml"
        f.write_text(f"""
profiles:
  bare: {{engine: remote, url: "http://127.0.0.1:{httpd.server_port}"}}
  ready: {{engine: remote, url: "{server}", health: /v1/health}}
  wrong: {{engine: remote, url: "{server}", health: /nothing-here, api_key_env: {KEY_ENV}}}
""")
        rows = {e["name"]: e for e in json.loads(cli("-f", str(f), "status", "--json").stdout)}
        assert rows["bare"]["state"] == "running" and "/v1/models answered" in rows["bare"]["message"]
        assert rows["ready"]["state"] == "running" and "/v1/health answered" in rows["ready"]["message"]
        assert rows["wrong"]["state"] == "unreachable" and "HTTP 404" in rows["wrong"]["message"]
    finally:
        httpd.shutdown()
        httpd.server_close()
