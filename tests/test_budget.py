"""`up` refuses profiles that won't fit the VRAM budget, with the numbers; `--force` overrides;
`plan` prints the estimate without starting anything (real tiny models' GGUF headers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmctl import load_profiles
from llmctl.errors import VramExceeded
from llmctl.gpu import budget as gb, probe as gp

from .util import cli, port_is_free


def budget_profiles(tmp_path: Path, model: Path, port: int, budget: str) -> dict:
    f = tmp_path / "b.yaml"
    f.write_text(f"profiles:\n  big: {{model: {model}, port: {port}, backend: vulkan, gpu_layers: 99, "
                 f"ctx_size: 8192}}\n"
                 f"defaults: {{vram_budget: {budget}}}\n")
    return {"LLMCTL_PROFILES": str(f)}


def test_plan_prints_estimate_and_starts_nothing(tmp_path, gemma, ports):
    port = ports()
    env = budget_profiles(tmp_path, gemma, port, "200MiB")
    r = cli("plan", "big", "--json", env=env)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    [e] = p["profiles"]
    assert e["method"] == "gguf" and e["offloaded_layers"] == e["block_count"] == 18
    assert e["weights"] == gemma.stat().st_size and e["kv_cache"] > 0
    assert p["fits"] is False and p["limit"] == 200 * 2**20
    assert not (Path(os.environ["LLMCTL_HOME"]) / "state" / "big.json").exists()


@pytest.mark.engine
def test_up_refuses_over_budget_and_force_overrides(tmp_path, gemma, ports, llama_server):
    port = ports()
    env = budget_profiles(tmp_path, gemma, port, "200MiB")
    r = cli("up", "big", env=env)
    assert r.returncode == 13
    assert "would not fit" in r.stderr and "vram_budget 200.0 MiB" in r.stderr and "MiB (gguf)" in r.stderr
    assert port_is_free(port) and not (Path(os.environ["LLMCTL_HOME"]) / "state" / "big.json").exists()
    r = cli("up", "big", "--force", env=env)  # the CPU build ignores -ngl here and runs on the CPU
    assert r.returncode == 0, r.stderr
    assert cli("down", "big", env=env).returncode == 0
    env = budget_profiles(tmp_path, gemma, port, "2GiB")
    r = cli("up", "big", env=env)
    assert r.returncode == 0, r.stderr
    assert cli("down", "big", env=env).returncode == 0


# -- per-GPU fit and unknown estimates (in-process; the GPUs are a real rocm-smi capture) -----
DATA = Path(__file__).parent / "data" / "gpu"
GIB = 2**30


def mi100s() -> gp.GpuReport:
    """Four Instinct MI100s (32 GiB each, nearly all free): tests/data/gpu/rocm-smi-all-mi100.json."""
    gpus = gp.parse_rocm_json((DATA / "rocm-smi-all-mi100.json").read_text())
    assert len(gpus) == 4
    return gp.GpuReport(gpus=gpus, tools={"rocm-smi": "ok"})


def vllm_config(tmp_path: Path, body: str):
    f = tmp_path / "v.yaml"
    f.write_text("profiles:\n" + body)
    return load_profiles([str(f)])


def vllm(name: str, port: int, util: float, devices: str = "", extra: str = "") -> str:
    dev = f", devices: [{devices}]" if devices else ""
    return (f"  {name}: {{engine: vllm, model: org/m, port: {port}, backend: rocm, "
            f"gpu_memory_utilization: {util}{dev}{extra}}}\n")


def test_pinned_profiles_are_checked_per_gpu_not_against_the_sum(tmp_path):
    """Two profiles pinned to GPU 0 that together need 1.2 x its memory do not fit, although
    the four GPUs together have room (the old check summed the free memory of all GPUs)."""
    cfg = vllm_config(tmp_path, vllm("a", 8001, 0.6, '"0"') + vllm("b", 8002, 0.6, '"0"'))
    p = gb.make_plan(cfg, ["a", "b"], report=mi100s())
    assert p.fits is False and p.need < p.limit  # the sum of all free memory would have said "fits"
    [g] = p.per_gpu
    assert g.gpu == "amd 0" and g.profiles == ["a", "b"] and g.need > g.free
    assert "GPU amd 0: a, b need" in p.describe()
    # the same two on different GPUs fit
    cfg = vllm_config(tmp_path, vllm("a", 8001, 0.6, '"0"') + vllm("b", 8002, 0.6, '"1"'))
    p = gb.make_plan(cfg, ["a", "b"], report=mi100s())
    assert p.fits is True and [g.gpu for g in p.per_gpu] == ["amd 0", "amd 1"]


def test_multi_device_profiles_are_split_evenly(tmp_path):
    """tensor_parallel_size 2 on GPUs 0 and 1: half of the estimate on each. A second profile
    on GPU 1 then has only what that half leaves."""
    body = vllm("tp", 8001, 0.5, '"0", "1"', ", tensor_parallel_size: 2")
    p = gb.make_plan(vllm_config(tmp_path, body), ["tp"], report=mi100s())
    [e] = p.estimates
    assert p.fits is True and [g.need for g in p.per_gpu] == [e.total // 2] * 2
    body += vllm("b", 8002, 0.6, '"1"')
    p = gb.make_plan(vllm_config(tmp_path, body), ["tp", "b"], report=mi100s())
    assert p.fits is False and [g.fits for g in p.per_gpu] == [True, False]


def test_unpinned_profiles_use_what_is_left_anywhere(tmp_path, gemma):
    """A llama-server profile without devices may go on any GPU: it fits in what the pinned
    ones leave; a device the tools do not report cannot be checked (not "fits")."""
    body = vllm("a", 8001, 0.9, '"0"') + (f"  g: {{model: {gemma}, port: 8003, backend: rocm, gpu_layers: 99, "
                                          f"ctx_size: 2048}}\n")
    p = gb.make_plan(vllm_config(tmp_path, body), ["a", "g"], report=mi100s())
    assert p.fits is True and 0 < p.anywhere < p.left
    p = gb.make_plan(vllm_config(tmp_path, vllm("x", 8001, 0.5, '"7"')), ["x"], report=mi100s())
    assert p.fits is None and "device '7' matches no GPU" in p.verdict()


def test_unknown_estimate_is_unknown_not_zero(tmp_path):
    """vLLM without a known GPU memory: "needed unknown", and a budget cannot say "fits"."""
    cfg = vllm_config(tmp_path, vllm("a", 8001, 0.45, '"0"') + vllm("b", 8002, 0.45, '"0"'))
    p = gb.make_plan(cfg, ["a", "b"], budget="10GiB", report=gp.GpuReport())
    assert p.need is None and p.unknown == ["a", "b"] and p.fits is None
    assert p.need_text() == "unknown" and p.verdict() == "cannot tell (unknown estimate for a, b)"
    d = p.to_dict()
    assert d["need"] is None and d["fits"] is None and d["profiles"][0]["total"] is None
    # known parts are still compared: over the budget without the unknown ones is "does not fit"
    p = gb.make_plan(cfg, ["a", "b"], budget="10GiB", report=gp.GpuReport(), running={"other": 11 * GIB})
    assert p.fits is False


def test_check_fits_warns_but_does_not_refuse_an_unknown(tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("profiles:\n" + vllm("a", 8001, 0.45, '"0"') + "defaults: {vram_budget: 10GiB}\n")
    cfg = load_profiles([str(f)])
    said: list[str] = []
    p = gb.check_fits(cfg, ["a"], warn=said.append)  # no GPU tool here: vLLM's estimate is unknown
    assert p is not None and p.fits is None
    assert said and "cannot tell (unknown estimate for a)" in said[0]
    with pytest.raises(VramExceeded):
        gb.check_fits(cfg, ["a"], running={"big": 11 * GIB}, warn=said.append)


def test_plan_cli_prints_unknowns(tmp_path):
    """`plan` of vLLM profiles: "needed unknown ... cannot tell", never "needed 0 B ... fits";
    with no limit known, no "limit: unknown unknown"."""
    f = tmp_path / "m.yaml"
    f.write_text("profiles:\n" + vllm("enhance", 8001, 0.45, '"0"') + vllm("summary", 8002, 0.45, '"0"'))
    env = {"LLMCTL_PROFILES": str(f)}
    r = cli("plan", "enhance", "summary", "--vram-budget", "10GiB", env=env)
    assert r.returncode == 0, r.stderr
    assert ("needed unknown; limit: vram_budget 10.0 GiB: cannot tell (unknown estimate for enhance, summary)"
            in r.stdout)
    assert "fits" not in r.stdout and "0 B" not in r.stdout
    r = cli("plan", "enhance", "summary", env=env)
    assert r.returncode == 0, r.stderr
    assert "unknown unknown" not in r.stdout
    assert "limit: unknown (no GPU tool answered and no vram_budget): cannot tell" in r.stdout
    p = json.loads(cli("plan", "enhance", "--json", "--vram-budget", "10GiB", env=env).stdout)
    assert p["need"] is None and p["fits"] is None and p["unknown"] == ["enhance"]


def test_unpinned_profiles_count_only_their_vendors_gpus(tmp_path, gemma):
    """A CUDA profile without devices can only go on an NVIDIA GPU: the AMD GPUs' free memory
    does not make it fit. (The H200 capture, with its free memory lowered to 100 MiB to stand
    for a busy card, next to the four MI100s.)"""
    import dataclasses

    [h200] = gp.parse_nvidia_gpus((DATA / "nvidia-smi-gpus-h200.csv").read_text())
    busy = dataclasses.replace(h200, free_mib=100)
    mixed = gp.GpuReport(gpus=mi100s().gpus + [busy], tools={"rocm-smi": "ok", "nvidia-smi": "ok"})
    body = f"  g: {{model: {gemma}, port: 8003, backend: cuda, gpu_layers: 99, ctx_size: 8192}}\n"
    p = gb.make_plan(vllm_config(tmp_path, body), ["g"], report=mixed)
    assert p.estimates[0].total > 100 * gp.MIB
    assert p.fits is False and "of nvidia GPUs" in p.describe(), p.describe()
    vulkan = body.replace("backend: cuda", "backend: vulkan")  # any vendor's GPU will do
    assert gb.make_plan(vllm_config(tmp_path, vulkan), ["g"], report=mixed).fits is True
