"""GPU probes: nvidia-smi and rocm-smi, when present, parsed into one shape.

Absent tools are simply absent: every probe returns empty results instead of raising.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1024 * 1024
NVIDIA_GPU_QUERY = "index,uuid,name,memory.total,memory.used,memory.free,driver_version"
NVIDIA_APP_QUERY = "pid,gpu_uuid,used_memory"


@dataclass
class Gpu:
    index: int
    vendor: str  #: nvidia | amd
    name: str
    total_mib: int | None
    used_mib: int | None
    free_mib: int | None
    uuid: str = ""
    driver: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GpuProcess:
    pid: int
    gpu: int | None  #: index of the GPU, when the tool says
    used_mib: int | None
    name: str = ""


@dataclass
class GpuReport:
    gpus: list[Gpu] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)  #: tool -> "ok" or why it gave nothing

    def usage_of(self, pids: set[int]) -> tuple[int | None, list[int]]:
        """GPU memory used by these pids (MiB) and the GPUs they are on; (None, []) if unknown."""
        hits = [p for p in self.processes if p.pid in pids]
        if not hits:
            return None, []
        used = sum(p.used_mib or 0 for p in hits)
        return used, sorted({p.gpu for p in hits if p.gpu is not None})


def _num(text: str) -> int | None:
    text = text.strip()
    try:
        return int(float(text))
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def parse_nvidia_gpus(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,driver_version
    --format=csv,noheader,nounits``"""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 7 or not parts[0].isdigit():
            continue
        out.append(Gpu(index=int(parts[0]), vendor="nvidia", uuid=parts[1], name=parts[2],
                       total_mib=_num(parts[3]), used_mib=_num(parts[4]), free_mib=_num(parts[5]),
                       driver=parts[6]))
    return out


def parse_nvidia_apps(text: str, gpus: list[Gpu]) -> list[GpuProcess]:
    """``nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits``"""
    by_uuid = {g.uuid: g.index for g in gpus}
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        out.append(GpuProcess(pid=int(parts[0]), gpu=by_uuid.get(parts[1]), used_mib=_num(parts[2])))
    return out


def parse_rocm_json(text: str) -> list[Gpu]:
    """``rocm-smi --showproductname --showmeminfo vram --showdriverversion --json`` (memory in
    bytes). The driver version is not per card: ``--showdriverversion`` puts it under the
    ``"system"`` key (``{"system": {"Driver version": "6.3.6"}}``), and every card gets it."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    system = data.get("system")
    driver = str(system.get("Driver version", "") or "") if isinstance(system, dict) else ""
    out = []
    for key, card in data.items():
        m = re.fullmatch(r"card(\d+)", key)
        if not m or not isinstance(card, dict):
            continue
        total = _num(str(card.get("VRAM Total Memory (B)", "")))
        used = _num(str(card.get("VRAM Total Used Memory (B)", "")))
        out.append(Gpu(index=int(m.group(1)), vendor="amd",
                       name=str(card.get("Card Series") or card.get("Card series") or card.get("Card Model") or key),
                       total_mib=total // MIB if total is not None else None,
                       used_mib=used // MIB if used is not None else None,
                       free_mib=(total - used) // MIB if total is not None and used is not None else None,
                       uuid=str(card.get("Unique ID", "")), driver=str(card.get("Driver version") or driver)))
    return sorted(out, key=lambda g: g.index)


def parse_rocm_pids(text: str) -> list[GpuProcess]:
    """``rocm-smi --showpids``: PID, PROCESS NAME, GPU(s) (a count, not an index), VRAM USED (bytes).

    ``gpu`` stays None: neither ``--showpids`` nor ``--showpids=details`` names the GPU (the
    latter's GPU column is also a count: ROCm/rocm-systems#4405), and no real capture of
    ``--showpidgpus`` (which does list device indices) is committed to test a parser against."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            used = _num(parts[-3])
            out.append(GpuProcess(pid=int(parts[0]), gpu=None, name=parts[1],
                                  used_mib=used // MIB if used is not None else None))
    return out


def _run(argv: list[str], timeout: float = 5.0) -> tuple[str | None, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit code {r.returncode}"
    return r.stdout, "ok"


def probe() -> GpuReport:
    """Ask whatever GPU tools exist; never raises."""
    report = GpuReport()
    if shutil.which("nvidia-smi"):
        gpus_txt, why = _run(["nvidia-smi", f"--query-gpu={NVIDIA_GPU_QUERY}", "--format=csv,noheader,nounits"])
        report.tools["nvidia-smi"] = why
        if gpus_txt:
            gpus = parse_nvidia_gpus(gpus_txt)
            report.gpus += gpus
            apps, _ = _run(["nvidia-smi", f"--query-compute-apps={NVIDIA_APP_QUERY}", "--format=csv,noheader,nounits"])
            report.processes += parse_nvidia_apps(apps or "", gpus)
    if shutil.which("rocm-smi"):
        txt, why = _run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showdriverversion", "--json"])
        report.tools["rocm-smi"] = why
        if txt:
            report.gpus += parse_rocm_json(txt)
            pids, _ = _run(["rocm-smi", "--showpids"])
            report.processes += parse_rocm_pids(pids or "")
    return report
