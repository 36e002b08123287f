"""The docker launcher. No Docker engine runs on these machines: the argv is checked exactly,
and the lifecycle runs against tests/helpers/fake_docker.py, a stand-in `docker` executable
placed first on PATH that records its calls and answers `inspect` the way Docker does (its
"container" is the misbehaving test server). No real container runs here."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import psutil
import pytest

from llmctl.engines.launch import spec_for
from llmctl.paths import Paths
from llmctl.profiles import load

from .util import cli, port_is_free

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / "tests" / "helpers" / "fake_docker.py"


def bestbox(tmp_path: Path, **over) -> Path:
    """profiles/bestbox.yaml with its models pointed at a local dummy file."""
    model = tmp_path / "models" / "qwen2.5-7b-instruct-q5_k_m.gguf"
    model.parent.mkdir(exist_ok=True)
    model.write_bytes(b"GGUF" + b"\0" * 28)
    text = (REPO / "profiles" / "bestbox.yaml").read_text()
    text = text.replace("qwen2.5-7b:Q5_K_M", str(model)).replace("qwen2.5-14b:Q4_K_M", str(model))
    for k, v in over.items():
        text = text.replace(k, v)
    f = tmp_path / "bestbox.yaml"
    f.write_text(text)
    return f


def test_rocm_light_gets_the_command_a_rocm_user_writes(tmp_path):
    f = bestbox(tmp_path)
    prof = load([str(f)]).profiles["light"]
    spec = spec_for(prof, Paths.from_env())
    model_dir = tmp_path / "models"
    assert spec.argv == [
        "docker", "run", "--rm", "--init", "--name", "llmctl-light", "-p", "127.0.0.1:8081:8081",
        "--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video",
        "-v", f"{model_dir}:/models:ro",
        "-e", "HIP_VISIBLE_DEVICES", "-e", "ROCR_VISIBLE_DEVICES",
        "--security-opt", "seccomp=unconfined",
        "ghcr.io/ggml-org/llama.cpp:server-rocm",
        "-m", "/models/qwen2.5-7b-instruct-q5_k_m.gguf", "--host", "0.0.0.0", "--port", "8081",
        "-ngl", "99", "-c", "8192",
    ]
    assert spec.env == {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}
    assert spec.launcher == "docker" and spec.container == "llmctl-light"


def test_cuda_gpus_podman_and_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHT_KEY", "sk-secret-123")
    f = bestbox(tmp_path, **{"backend: rocm": "backend: cuda\n    api_key_env: LIGHT_KEY",
                             'devices: ["0"]\n    gpu_layers: 99\n    ctx_size: 8192': 'devices: ["0", "1"]',
                             "devices: [/dev/kfd, /dev/dri]": "command: podman"})
    prof = load([str(f)]).profiles["light"]
    spec = spec_for(prof, Paths.from_env())
    argv = spec.argv
    assert argv[0] == "podman"
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    key = Paths.from_env().key_file("light")
    assert f"{key}:/run/llmctl/api.key:ro" in argv
    assert argv[argv.index("--api-key-file") + 1] == "/run/llmctl/api.key"
    assert "sk-secret-123" not in " ".join(argv)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert argv[argv.index("-e") + 1] == "CUDA_VISIBLE_DEVICES" and spec.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_vllm_in_docker_takes_model_and_key_by_env(tmp_path, monkeypatch):
    model = tmp_path / "awq"
    model.mkdir()
    monkeypatch.setenv("VKEY", "sk-v")
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  sum:\n    engine: vllm\n    model: {model}\n    port: 8002\n"
                 f"    backend: cuda\n    gpu_memory_utilization: 0.9\n    max_model_len: 32768\n"
                 f"    quantization: awq\n    api_key_env: VKEY\n    launcher: docker\n"
                 f"    docker: {{image: vllm/vllm-openai:latest}}\n")
    spec = spec_for(load([str(f)]).profiles["sum"], Paths.from_env())
    a = spec.argv
    assert a[:8] == ["docker", "run", "--rm", "--init", "--name", "llmctl-sum", "-p", "127.0.0.1:8002:8002"]
    assert a[a.index("--gpus") + 1] == "all" and f"{model}:/models/awq:ro" in a
    tail = a[a.index("vllm/vllm-openai:latest") + 1:]
    assert tail[:2] == ["/models/awq", "--host"] and "--gpu-memory-utilization" in tail
    assert "VLLM_API_KEY" in a and "sk-v" not in " ".join(a)
    assert spec.env_from == {"VLLM_API_KEY": "VKEY"}


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").symlink_to(FAKE)
    state = tmp_path / "fake-docker"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_DIR", str(state))
    return state


def calls(state: Path) -> list[list[str]]:
    p = state / "calls.jsonl"
    return [json.loads(line)["argv"] for line in p.read_text().splitlines()] if p.exists() else []


def docker_profile(tmp_path: Path, port: int) -> dict:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "d.yaml"
    f.write_text(f"profiles:\n  light:\n    model: {model}\n    port: {port}\n    backend: rocm\n"
                 f"    stop_timeout: 2\n    launcher: docker\n"
                 f"    docker: {{image: ghcr.io/ggml-org/llama.cpp:server-rocm, devices: [/dev/kfd]}}\n")
    return {"LLMCTL_PROFILES": str(f)}


def test_lifecycle_against_stand_in_docker(tmp_path, fake_docker, ports):
    port = ports()
    env = docker_profile(tmp_path, port)
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    run = [c for c in calls(fake_docker) if c[0] == "run"]
    assert len(run) == 1 and run[0][:5] == ["run", "--rm", "--init", "--name", "llmctl-light"]
    assert f"127.0.0.1:{port}:{port}" in run[0]
    [st] = json.loads(cli("status", "--json", env=env).stdout)
    assert st["state"] == "running"
    assert st["container"]["name"] == "llmctl-light" and st["container"]["Running"] is True
    assert ["inspect", "llmctl-light"] in calls(fake_docker)  # state asked of docker, by name
    r = cli("logs", "light", "-n", "5", env=env)
    assert r.returncode == 0 and "misbehaving server pid" in r.stdout
    assert ["logs", "--tail", "5", "llmctl-light"] in calls(fake_docker)
    r = cli("down", "light", env=env)
    assert r.returncode == 0, r.stderr
    assert ["stop", "-t", "2", "llmctl-light"] in calls(fake_docker)
    assert port_is_free(port)
    assert not (fake_docker / "llmctl-light.json").exists()  # --rm


def test_stale_container_is_removed_and_running_one_refused(tmp_path, fake_docker, ports):
    port = ports()
    env = docker_profile(tmp_path, port)
    fake_docker.mkdir(parents=True, exist_ok=True)
    (fake_docker / "llmctl-light.json").write_text(json.dumps({"pid": 999999, "running": False, "exit": 1, "rm": False}))
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    assert ["rm", "-f", "llmctl-light"] in calls(fake_docker)
    assert cli("down", "light", env=env).returncode == 0
    # a running container of that name, not started by this keeper: refused, nothing killed
    stranger = psutil.Popen(["sleep", "60"])
    try:
        (fake_docker / "llmctl-light.json").write_text(json.dumps({"pid": stranger.pid, "running": True,
                                                                   "exit": None, "rm": False}))
        r = cli("up", "light", env=env)
        assert r.returncode == 8 and "already running outside llmctl" in r.stderr
        assert stranger.is_running()
    finally:
        stranger.kill()
        stranger.wait()
