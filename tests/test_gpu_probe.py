"""GPU probes parsed from real captured outputs (tests/data/gpu/README.md says where each came
from), device env per backend, per-backend binaries, and `doctor` on this GPU-less machine."""

from __future__ import annotations

import json
import os
import shutil
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
    assert g.driver == ""  # that capture was taken without --showdriverversion


def test_rocm_driver_version_capture():
    """--showdriverversion puts the driver under "system", not in a card: every GPU gets it."""
    gpus = gp.parse_rocm_json((DATA / "rocm-smi-all-mi100.json").read_text())
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert {g.driver for g in gpus} == {"6.3.6"}
    assert gpus[0].name == "Arcturus GL-XL [Instinct MI100]" and gpus[0].uuid == "0x79ccd55167a2124a"
    assert gpus[3].total_mib == 34342961152 // 2**20 and gpus[3].used_mib == 6750208 // 2**20


def fake_tool(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    f = bindir / name
    f.write_text("#!/bin/sh\n" + script)
    f.chmod(0o755)


CAT = shutil.which("cat")


def test_probe_asks_rocm_smi_for_the_driver(monkeypatch, tmp_path):
    """probe() runs rocm-smi with --showdriverversion (a stand-in rocm-smi replays the real
    captures, and fails if the flag is missing)."""
    fake_tool(tmp_path / "bin", "rocm-smi", f"""case "$*" in
  *--showpids*) {CAT} {DATA / "rocm-smi-showpids-details.txt"} ;;
  *--showdriverversion*--json*) {CAT} {DATA / "rocm-smi-all-mi100.json"} ;;
  *) echo "no driver asked for" >&2; exit 2 ;;
esac
""")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    report = gp.probe()
    assert report.tools == {"rocm-smi": "ok"}
    assert len(report.gpus) == 4 and all(g.driver == "6.3.6" and g.vendor == "amd" for g in report.gpus)
    assert report.usage_of({132174})[0] == (15053770752 // 2**20) + (16869904384 // 2**20)


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


#: `llama-server --list-devices` of the Vulkan build in the device run (docs/gpu-run/run.log)
VULKAN_LIST = "Available devices:\n  Vulkan0: NVIDIA H200 (143771 MiB, 143139 MiB free)\n"


def test_build_backend_from_its_devices():
    from llmctl.cli.doctor_cmd import build_backend

    assert build_backend(["Vulkan0: NVIDIA H200 (143771 MiB, 143139 MiB free)"]) == "vulkan"
    assert build_backend(["CUDA0: NVIDIA H200", "CUDA1: NVIDIA H200"]) == "cuda"
    assert build_backend(["ROCm0: AMD Instinct MI100"]) == "rocm"
    assert build_backend(["(none)"]) == "cpu"
    assert build_backend(["(cannot run: [Errno 8] Exec format error)"]) == "unknown"


def test_doctor_labels_a_build_by_what_it_is(tmp_path):
    """A Vulkan build found on PATH while looking for the CPU build is labelled vulkan, and the
    looked-up backend stays visible (the device run's log had it as "llama-server (cpu)")."""
    fake_tool(tmp_path / "vkbin", "llama-server", f"printf '{VULKAN_LIST}'\n")
    path = f"{tmp_path / 'vkbin'}:{os.environ['PATH']}"
    r = cli("doctor", env={"PATH": path})
    assert r.returncode == 0, r.stderr
    server = str(tmp_path / "vkbin" / "llama-server")
    assert f"llama-server (vulkan): {server} [from PATH]" in r.stdout
    assert "  found for backend cpu, but it is a Vulkan build" in r.stdout
    assert "llama-server (cpu)" not in r.stdout
    info = json.loads(cli("doctor", "--json", env={"PATH": path}).stdout)
    [e] = [e for e in info["engines"] if e.get("path") == server]
    assert (e["backend"], e["looked_up_for"]) == ("vulkan", "cpu")
