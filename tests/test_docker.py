"""The docker launcher: the argv checked exactly (the seed's ROCm devices, CUDA's --gpus, vLLM),
and the calls it makes, against tests/helpers/fake_docker.py, a stand-in `docker` executable
placed first on PATH that records its calls and answers `inspect` the way Docker does (its
"container" is the misbehaving test server). The launcher also runs on a real engine, podman
with runc, in tests/test_podman.py; fake_docker.py's docstring says which cases stay on the
stand-in and why (an OOMKilled report, a client whose exit status is not its container's, the
calls themselves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmctl.engines.launch import spec_for
from llmctl.paths import Paths
from llmctl.profiles import load

from .util import cli, port_is_free, wait_for

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
        "docker", "run", "--init", "--name", "llmctl-light", "-p", "127.0.0.1:8081:8081",
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
    assert argv.count("--gpus") == 1 and "--device" not in argv and "--group-add" not in argv  # CUDA: --gpus only
    key = Paths.from_env().key_file("light")
    assert f"{key}:/run/llmctl/api.key:ro" in argv
    assert argv[argv.index("--api-key-file") + 1] == "/run/llmctl/api.key"
    assert "sk-secret-123" not in " ".join(argv)
    assert not key.exists() and spec.key_files == {str(key): "LIGHT_KEY"}  # the keeper writes it, 0600
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
    assert a[:7] == ["docker", "run", "--init", "--name", "llmctl-sum", "-p", "127.0.0.1:8002:8002"]
    assert "--rm" not in a and "--device" not in a and "--group-add" not in a
    assert a[a.index("--gpus") + 1] == "all" and f"{model}:/models/awq:ro" in a
    tail = a[a.index("vllm/vllm-openai:latest") + 1:]
    assert tail[:2] == ["/models/awq", "--host"] and "--gpu-memory-utilization" in tail
    assert "VLLM_API_KEY" in a and "sk-v" not in " ".join(a)
    assert spec.env_from == {"VLLM_API_KEY": "VKEY"}


def rocm_argv(tmp_path: Path, devices: str | None) -> list[str]:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "r.yaml"
    dev = f", devices: {devices}" if devices is not None else ""
    f.write_text(f"profiles:\n  r:\n    model: {model}\n    port: 8090\n    backend: rocm\n    launcher: docker\n"
                 f"    docker: {{image: ghcr.io/ggml-org/llama.cpp:server-rocm{dev}}}\n")
    argv = spec_for(load([str(f)]).profiles["r"], Paths.from_env()).argv
    return argv[:argv.index("ghcr.io/ggml-org/llama.cpp:server-rocm")]


def devices_of(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--device"]


def test_rocm_gets_kfd_and_dri_without_being_told(tmp_path):
    argv = rocm_argv(tmp_path, None)
    assert argv[7:13] == ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"]
    assert devices_of(rocm_argv(tmp_path, "[/dev/kfd, /dev/dri]")) == ["/dev/kfd", "/dev/dri"]  # no duplicates
    assert devices_of(rocm_argv(tmp_path, "[/dev/dri]")) == ["/dev/dri", "/dev/kfd"]
    # one GPU's render node only: /dev/dri is not widened to every GPU
    assert devices_of(rocm_argv(tmp_path, "[/dev/dri/renderD128]")) == ["/dev/dri/renderD128", "/dev/kfd"]
    assert devices_of(rocm_argv(tmp_path, '["/dev/kfd:/dev/kfd:rwm"]')) == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri"]


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """The stand-in `docker` first on PATH, and its stand-in daemon (whose children are the
    "containers": not the `docker run` client's children, as with Docker). Fails the test if a
    container is still running at the end."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").symlink_to(FAKE)
    state = tmp_path / "fake-docker"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_DIR", str(state))
    daemon = subprocess.Popen([sys.executable, str(FAKE), "daemon"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (state / "daemon.addr").exists():
            assert daemon.poll() is None and time.monotonic() < deadline, "the stand-in daemon did not start"
            time.sleep(0.02)
        yield state
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    left = json.loads((state / "daemon.left").read_text())
    assert left == [], f"containers still running at the end: {left}"


def calls(state: Path) -> list[list[str]]:
    p = state / "calls.jsonl"
    return [json.loads(line)["argv"] for line in p.read_text().splitlines()] if p.exists() else []


def docker_profile(tmp_path: Path, port: int, extra: str = "") -> dict:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "d.yaml"
    f.write_text(f"profiles:\n  light:\n    model: {model}\n    port: {port}\n    backend: rocm\n"
                 f"    stop_timeout: 2\n    launcher: docker\n{extra}"
                 f"    docker: {{image: ghcr.io/ggml-org/llama.cpp:server-rocm, devices: [/dev/kfd]}}\n")
    return {"LLMCTL_PROFILES": str(f)}


def status(env: dict) -> dict:
    [st] = json.loads(cli("status", "--json", env=env).stdout)
    return st


def container(state: Path) -> dict | None:
    p = state / "llmctl-light.json"
    return json.loads(p.read_text()) if p.exists() else None


def log_text(env: dict) -> str:
    return Path(status(env)["log"]).read_text()


def test_lifecycle_against_stand_in_docker(tmp_path, fake_docker, ports):
    port = ports()
    env = docker_profile(tmp_path, port)
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    run = [c for c in calls(fake_docker) if c[0] == "run"]
    assert len(run) == 1 and run[0][:4] == ["run", "--init", "--name", "llmctl-light"] and "--rm" not in run[0]
    assert f"127.0.0.1:{port}:{port}" in run[0]
    assert devices_of(run[0]) == ["/dev/kfd", "/dev/dri"]  # /dev/dri added for rocm
    st = status(env)
    assert st["state"] == "running"
    assert st["container"]["name"] == "llmctl-light" and st["container"]["Running"] is True
    assert st["container"]["Pid"] == container(fake_docker)["pid"] != st["pid"]  # the client is not the container
    assert ["inspect", "llmctl-light"] in calls(fake_docker)  # state asked of docker, by name
    r = cli("logs", "light", "-n", "5", env=env)
    assert r.returncode == 0 and "misbehaving server pid" in r.stdout
    assert ["logs", "--tail", "5", "llmctl-light"] in calls(fake_docker)
    r = cli("down", "light", env=env)
    assert r.returncode == 0, r.stderr
    c = calls(fake_docker)
    assert ["stop", "-t", "2", "llmctl-light"] in c
    assert c.index(["rm", "-f", "llmctl-light"]) > c.index(["stop", "-t", "2", "llmctl-light"])
    assert port_is_free(port)
    assert container(fake_docker) is None  # removed by the keeper: there is no --rm


def test_oom_kill_is_reported_from_inspect(tmp_path, fake_docker, ports):
    port = ports()
    env = docker_profile(tmp_path, port, '    restart: "no"\n')
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    pid = container(fake_docker)["pid"]
    (fake_docker / "llmctl-light.oom-kill").touch()  # the stand-in's "kernel" kills it now
    st = wait_for(lambda: (s := status(env))["state"] == "failed" and s, what="the OOM kill")
    assert "killed by the kernel's OOM killer (docker inspect: OOMKilled)" in st["message"]
    assert st["exit_code"] == 137 and st["exit_signal"] is None
    log = log_text(env)
    assert "killed by the kernel's OOM killer (docker inspect: OOMKilled)" in log
    assert "exited with code 137 (`docker inspect`)" in log
    c = calls(fake_docker)
    assert c.index(["rm", "-f", "llmctl-light"]) > c.index(["inspect", "llmctl-light"])
    assert container(fake_docker) is None and not psutil.pid_exists(pid)
    r = cli("status", "light", env=env)
    assert r.returncode == 3 and "OOM" in r.stdout + r.stderr
    assert cli("down", "light", env=env).returncode == 0


def test_exit_code_comes_from_inspect_not_the_client(tmp_path, fake_docker, ports, monkeypatch):
    port = ports()
    env = docker_profile(tmp_path, port, '    restart: "no"\n    env: {MISBEHAVE: "--crash-after 1 --exit-code 3"}\n')
    monkeypatch.setenv("FAKE_DOCKER_CLIENT_EXIT", "125")  # the client says 125; the container said 3
    cli("up", "light", env=env)  # healthy at once, crashes 1 s later (on a busy machine maybe while starting)
    st = wait_for(lambda: (s := status(env))["state"] == "failed" and s, what="the crash")
    assert st["exit_code"] == 3 and "OOM" not in st["message"]
    log = log_text(env)
    assert "server exited (code 125)" in log and "exited with code 3 (`docker inspect`)" in log
    assert ["rm", "-f", "llmctl-light"] in calls(fake_docker) and container(fake_docker) is None
    assert cli("down", "light", env=env).returncode == 0


def test_client_killed_container_running_is_stopped_removed_and_restarted(tmp_path, fake_docker, ports, monkeypatch):
    port = ports()
    env = docker_profile(tmp_path, port)  # restart: on-failure
    monkeypatch.setenv("FAKE_DOCKER_KEEP_RUNNING", "1")  # as Docker does: the container outlives its client
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    first = status(env)
    inner = container(fake_docker)["pid"]
    os.kill(first["pid"], 9)  # the docker client only
    st = wait_for(lambda: (s := status(env))["restarts"] == 1 and s["state"] == "running" and s,
                  what="the restart")
    log = log_text(env)
    assert "server exited (signal 9)" in log
    assert "but container llmctl-light still runs: stopping and removing it" in log
    # stopped by us, the container's own exit code (0 for a server that exits cleanly on SIGTERM)
    # is not what the keeper judges by: the server was lost with its client, a failure
    assert "exited with code 143 (`docker inspect`)" not in log
    assert not psutil.pid_exists(inner)
    c = calls(fake_docker)
    stop_at = c.index(["stop", "-t", "2", "llmctl-light"])
    assert c.index(["rm", "-f", "llmctl-light"]) > stop_at
    assert len([x for x in c if x[0] == "run"]) == 2  # the restart policy applied: a new container
    assert container(fake_docker)["pid"] != inner and st["pid"] != first["pid"]
    assert cli("down", "light", env=env).returncode == 0
    assert container(fake_docker) is None and port_is_free(port)


def test_status_counts_vram_of_the_container_process(tmp_path, fake_docker, ports):
    """The container's processes are not the docker client's children: status sums the GPU
    memory of the tree under the container's State.Pid (a stand-in nvidia-smi, whose GPU line
    is the committed H200 capture, reports the container's pid)."""
    port = ports()
    env = docker_profile(tmp_path, port)
    assert cli("up", "light", env=env).returncode == 0
    try:
        inner = container(fake_docker)["pid"]
        client = status(env)["pid"]
        assert inner not in {p.pid for p in psutil.Process(client).children(recursive=True)}
        gpus = next((REPO / "tests" / "data" / "gpu").glob("nvidia-smi-gpus*.csv")).read_text()
        uuid = gpus.splitlines()[0].split(",")[1].strip()
        smi = tmp_path / "bin" / "nvidia-smi"
        smi.write_text("#!/bin/sh\n"
                       "case \"$1\" in\n"
                       f"  --query-gpu=*) cat <<'EOF'\n{gpus.strip()}\nEOF\n;;\n"
                       f"  --query-compute-apps=*) echo '{inner}, {uuid}, 1234'; echo '1, {uuid}, 99';;\n"
                       "esac\n")
        smi.chmod(0o755)
        st = status(env)
        assert st["vram_mib"] == 1234 and st["gpus"] == [0]
    finally:
        assert cli("down", "light", env=env).returncode == 0


def test_stale_container_is_removed_and_running_one_refused(tmp_path, fake_docker, ports):
    port = ports()
    env = docker_profile(tmp_path, port)
    fake_docker.mkdir(parents=True, exist_ok=True)
    record = {"pid": 999999, "running": False, "exit": 1, "rm": False}
    (fake_docker / "llmctl-light.json").write_text(json.dumps(record))
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
