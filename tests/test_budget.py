"""`up` refuses profiles that won't fit the VRAM budget, with the numbers; `--force` overrides;
`plan` prints the estimate without starting anything (real tiny models' GGUF headers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .util import cli, port_is_free


def budget_profiles(tmp_path: Path, model: Path, port: int, budget: str) -> dict:
    f = tmp_path / "b.yaml"
    f.write_text(f"profiles:\n  big: {{model: {model}, port: {port}, backend: vulkan, gpu_layers: 99, ctx_size: 8192}}\n"
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
