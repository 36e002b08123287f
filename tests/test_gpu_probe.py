"""GPU probes parsed from real captured outputs (tests/data/gpu/README.md says where each came
from), device env per backend, per-backend binaries, and `doctor` on this GPU-less machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmctl.engines.devices import device_env
from llmctl.engines.discovery import find_llama
from llmctl.errors import EngineNotFound
from llmctl.gpu import probe as gp

from .util import cli

DATA = Path(__file__).parent / "data" / "gpu"


def test_rocm_meminfo_capture():
    [g] = gp.parse_rocm_json((DATA / "rocm-smi-meminfo.json").read_text())
    assert (g.index, g.vendor, g.name) == (0, "amd", "Radeon RX 7900 XT")
    assert g.total_mib == 21458059264 // 2**20 == 20464 and g.used_mib == 26
    assert g.free_mib == (21458059264 - 27856896) // 2**20


def test_rocm_showpids_captures():
    procs = gp.parse_rocm_pids((DATA / "rocm-smi-showpids.txt").read_text())
    assert len(procs) == 8
    big = [p for p in procs if p.pid == 1168514][0]
    assert big.name == "pt_main_thread" and big.used_mib == 177386942464 // 2**20 and big.gpu is None
    details = gp.parse_rocm_pids((DATA / "rocm-smi-showpids-details.txt").read_text())
    report = gp.GpuReport(processes=details)
    used, gpus = report.usage_of({132174})
    assert used == (15053770752 // 2**20) + (16869904384 // 2**20) and gpus == []


@pytest.mark.skipif(not list(DATA.glob("nvidia-smi-gpus*.csv")), reason="no nvidia-smi capture committed yet")
def test_nvidia_captures():
    gpus = gp.parse_nvidia_gpus(next(DATA.glob("nvidia-smi-gpus*.csv")).read_text())
    assert gpus and gpus[0].vendor == "nvidia" and gpus[0].total_mib > 70000 and gpus[0].name.startswith("NVIDIA")
    apps = gp.parse_nvidia_apps(next(DATA.glob("nvidia-smi-apps*.csv")).read_text(), gpus)
    assert apps and all(a.gpu == gpus[0].index and a.used_mib > 0 for a in apps)


def test_garbage_and_absent_tools_give_nothing(monkeypatch, tmp_path):
    assert gp.parse_nvidia_gpus("No devices were found\n") == []
    assert gp.parse_rocm_json("not json") == []
    assert gp.parse_nvidia_apps("", []) == []
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi, no rocm-smi
    report = gp.probe()
    assert report.gpus == [] and report.tools == {}


def test_device_env_per_backend():
    assert device_env("cuda", ["0", "1"]) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert device_env("rocm", ["1"]) == {"HIP_VISIBLE_DEVICES": "1", "ROCR_VISIBLE_DEVICES": "1"}
    assert device_env("vulkan", ["0"]) == {"GGML_VK_VISIBLE_DEVICES": "0"}
    assert device_env("cpu", ["0"]) == {} and device_env("cuda", []) == {}


def test_per_backend_binaries_from_user_config(tmp_path):
    home = Path(os.environ["LLMCTL_HOME"])
    fake = tmp_path / "vk" / "llama-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.yaml").write_text(f"binaries:\n  vulkan: {fake}\n  rocm: /nope/llama-server\n")
    assert find_llama(backend="vulkan").path == str(fake)
    assert find_llama(backend="cpu").path != str(fake)
    with pytest.raises(EngineNotFound) as ei:
        find_llama(backend="rocm")
    assert "binaries.rocm" in ei.value.message


def test_doctor_on_a_machine_without_gpus(llama_server):
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["gpus"] == []
    cpu = [e for e in info["engines"] if e["backend"] == "cpu"][0]
    assert cpu["found"] and cpu["path"] == llama_server and cpu["tools"]["llama-completion"]
