"""``vram_budget: free``: each GPU's capacity is what is free on it when llmctl looks, plus what
llmctl's own servers hold there. No GPU here: a stand-in nvidia-smi answers from files the test
writes (the GPU lines in the committed H200 capture's format), while the servers are real
llama-servers (the CPU build ignores the GPU flags and the visible-device variable)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .util import cli

MIB = 2**20
UUIDS = ("GPU-0f9a1c2e-0000-4000-8000-000000000000", "GPU-7b3d5e61-0000-4000-8000-000000000001")


def stand_in_smi(bindir: Path, free_mib: tuple[int, ...], apps: list[tuple[int, int, int]] = ()) -> None:
    """An nvidia-smi answering the two queries llmctl makes: GPUs (index, uuid, name, total, used,
    free, driver) and compute apps (pid, GPU uuid, MiB)."""
    bindir.mkdir(parents=True, exist_ok=True)
    gpus = "\n".join(f"{i}, {UUIDS[i]}, NVIDIA H200, 143771, {143771 - f}, {f}, 580.159.04"
                     for i, f in enumerate(free_mib))
    procs = "\n".join(f"{pid}, {UUIDS[gpu]}, {mib}" for pid, gpu, mib in apps) or ":"
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   f"  --query-gpu=*) cat <<'EOF'\n{gpus}\nEOF\n;;\n"
                   f"  --query-compute-apps=*) cat <<'EOF'\n{procs}\nEOF\n;;\n"
                   "esac\n")
    smi.chmod(0o755)


def test_free_is_a_budget_word_and_no_number():
    from llmctl.gpu.placement import budget_by_gpu, budget_bytes, is_free

    assert is_free("free") and is_free(" Free ") and not is_free("20GiB") and not is_free({"0": "1GiB"})
    assert budget_bytes("free") is None and budget_by_gpu("free") == {}


@pytest.mark.engine
def test_free_places_by_each_gpus_free_memory_and_counts_our_servers_as_room(tmp_path, smollm2, ports,
                                                                               llama_server, monkeypatch):
    """`up` under ``vram_budget: free`` puts each unpinned cuda profile on the GPU whose free
    memory fits it best (the stand-in says GPU 0 has room for one, GPU 1 for three); then the
    capacity counts the memory a running server of ours holds as room, not as taken."""
    from llmctl import load_profiles
    from llmctl.engines.spec import LaunchSpec
    from llmctl.gpu.estimate import estimate_profile
    from llmctl.paths import Paths
    from llmctl.supervise.control import Supervisor

    f = tmp_path / "u.yaml"
    gpu = "backend: cuda, gpu_layers: 99, ctx_size: 512, threads: 1"
    f.write_text("profiles:\n" + "".join(f"  {n}: {{model: {smollm2}, port: {ports()}, {gpu}}}\n" for n in "ab")
                 + "defaults: {vram_budget: free}\n")
    each = estimate_profile(load_profiles([str(f)]).profiles["a"]).total
    assert each
    bindir = tmp_path / "bin"
    free = (int(each * 1.5) // MIB, int(each * 3.5) // MIB)
    stand_in_smi(bindir, free)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    env = {"LLMCTL_PROFILES": str(f)}
    try:
        r = cli("plan", "a", "b", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["limit_from"].startswith("free memory")  # free: no written number
        r = cli("up", "a", "b", env=env)
        assert r.returncode == 0, r.stderr
        paths = Paths.from_env()
        seen = {n: LaunchSpec.read(paths.spec_file(n)).env.get("CUDA_VISIBLE_DEVICES") for n in "ab"}
        assert seen == {"a": "0", "b": "1"}  # a fills GPU 0 best; b no longer fits there
        pid = json.loads(cli("status", "a", "--json", env=env).stdout)[0]["pid"]
        stand_in_smi(bindir, (free[0] - 300, free[1]), [(pid, 0, 300), (1, 1, 5000)])  # pid 1: not ours
        config = load_profiles([str(f)])
        caps = Supervisor(config, paths).gpu_capacity()
        assert caps == {"0": free[0] * MIB, "1": free[1] * MIB}
    finally:
        assert cli("down", env=env).returncode == 0


def smi_finding_port(bindir: Path, port: int, mib: int) -> None:
    """A stand-in nvidia-smi that reports every process listening on ``port`` (by its command
    line) as holding ``mib`` MiB of GPU 0."""
    bindir.mkdir(parents=True, exist_ok=True)
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   f"  --query-gpu=*) echo '0, {UUIDS[0]}, NVIDIA H200, 143771, 1000, 142771, 580.159.04';;\n"
                   "  --query-compute-apps=*)\n"
                   "    for d in /proc/[0-9]*; do\n"
                   f"      if tr '\\000' ' ' < $d/cmdline 2>/dev/null | grep -q -- '--port {port} '; then\n"
                   f"        echo \"${{d#/proc/}}, {UUIDS[0]}, {mib}\"; fi\n"
                   "    done;;\n"
                   "esac\n")
    smi.chmod(0o755)


@pytest.mark.engine
def test_the_gateway_learns_a_servers_vram_once_it_is_healthy(tmp_path, smollm2, ports, llama_server, monkeypatch):
    """Estimates that learn, in the gateway: after it starts a server on demand it reads the
    server's GPU memory (the stand-in nvidia-smi says 777 MiB for the process on its port), keeps
    it in learned-vram.json, and the budget counts that figure from then on, not the GGUF
    estimate (which `plan` shows beside it)."""
    import httpx

    from llmctl import load_profiles
    from llmctl.gateway import GatewayConfig, start_in_thread
    from llmctl.paths import Paths

    port = ports()
    f = tmp_path / "g.yaml"
    f.write_text(f"profiles:\n  a: {{model: {smollm2}, port: {port}, backend: cuda, gpu_layers: 99, ctx_size: 512, "
                 f"threads: 1}}\ndefaults: {{vram_budget: {{0: 10GiB}}}}\n")
    bindir = tmp_path / "bin"
    smi_finding_port(bindir, port, 777)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    config = load_profiles([str(f)])
    gw = start_in_thread(config, GatewayConfig(port=0, refresh_interval=0), paths=Paths.from_env())
    try:
        r = httpx.post(gw.url + "/v1/completions", json={"model": "a", "prompt": "Hi", "max_tokens": 2}, timeout=120)
        assert r.status_code == 200, r.text
        learned = Path(os.environ["LLMCTL_HOME"]) / "learned-vram.json"
        from .util import wait_for

        wait_for(lambda: learned.exists(), 30, "learned-vram.json")
        assert list(json.loads(learned.read_text()).values()) == [777 * MIB]
        rec = gw.gateway.pool.records["a"]
        wait_for(lambda: rec.estimate == 777 * MIB, 30, "the pool's figure for a")
    finally:
        gw.stop()
        cli("down", env={"LLMCTL_PROFILES": str(f)})
    p = json.loads(cli("plan", "a", "--json", env={"LLMCTL_PROFILES": str(f)}).stdout)
    assert p["profiles"][0]["total"] == 777 * MIB and p["estimated"]["a"] not in (None, 777 * MIB)


def test_the_gateway_takes_each_gpus_free_memory_as_its_budget(tmp_path, monkeypatch):
    """``vram_budget: free`` in `serve`: the pool's per-GPU budgets are each GPU's free memory at
    start (the stand-in nvidia-smi says 1000 and 3000 MiB), the one budget their sum; a budget
    map is taken as written, and a number stays one budget."""
    from llmctl import load_profiles
    from llmctl.gateway import GatewayConfig, start_in_thread
    from llmctl.paths import Paths

    bindir = tmp_path / "bin"
    stand_in_smi(bindir, (1000, 3000))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    f = tmp_path / "g.yaml"
    for budget, gpus, total in (("free", {"0": 1000 * MIB, "1": 3000 * MIB}, 4000 * MIB),
                                ("{0: 1GiB}", {"0": 1024 * MIB}, 1024 * MIB), ("2GiB", {}, 2048 * MIB)):
        f.write_text(f"profiles:\n  a: {{model: /nonexistent.gguf, port: 1, backend: cuda}}\n"
                     f"defaults: {{vram_budget: {budget}}}\n")
        gw = start_in_thread(load_profiles([str(f)]), GatewayConfig(port=0, refresh_interval=0), paths=Paths.from_env())
        try:
            assert (gw.gateway.pool.gpus, gw.gateway.budget) == (gpus, total), budget
        finally:
            gw.stop()


def test_a_reload_under_free_keeps_the_budget_it_measured():
    """``vram_budget: free`` is measured when the gateway starts; a reload that keeps ``free``
    keeps that budget without measuring again (which would warn of a changed budget whenever
    another program's GPU memory moved); a written budget is read afresh."""
    from llmctl.gateway.reload import budget_after
    from llmctl.profiles.schema import Config, Defaults

    free, written = Config(defaults=Defaults(vram_budget="free")), Config(defaults=Defaults(vram_budget="2GiB"))

    def measured() -> int:
        raise AssertionError("measured again")

    assert budget_after(free, free, 1000 * MIB, measured) == 1000 * MIB
    assert budget_after(free, written, 1000 * MIB, lambda: 2048 * MIB) == 2048 * MIB
    assert budget_after(written, free, 2048 * MIB, lambda: 500 * MIB) == 500 * MIB
