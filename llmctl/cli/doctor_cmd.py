"""`doctor`: what this machine offers llmctl (GPUs, engines, tools, directories)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from ..output import Output
from .common import JsonOpt, handle_errors


def _list_devices(binary: str, env: dict[str, str]) -> list[str]:
    """`llama-server --list-devices`: one line per device the build can use."""
    try:
        r = subprocess.run([binary, "--list-devices"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, **env})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"(cannot run: {exc})"]
    lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines()]
    found, on = [], False
    for ln in lines:
        if ln.lower().startswith("available devices"):
            on = True
            continue
        if on and ln:
            found.append(ln)
    return found or ["(none)"]


#: llama.cpp's device name prefixes (`--list-devices`: "Vulkan0: NVIDIA H200 (...)") -> backend
DEVICE_BACKENDS = {"vulkan": "vulkan", "cuda": "cuda", "rocm": "rocm", "mtl": "metal", "metal": "metal"}


def build_backend(devices: list[str]) -> str:
    """The backend a llama-server build is, from its `--list-devices` lines: Vulkan0 -> vulkan,
    CUDA0 -> cuda, ROCm0 -> rocm, MTL0 -> metal (others: the prefix, lowercased); several kinds
    -> joined with "+"; no device -> cpu; the build could not be run -> unknown. (A GPU build on
    a machine whose GPU it cannot see lists no device either, so it reads as cpu here.)"""
    if any(d.startswith("(cannot run") for d in devices):
        return "unknown"
    kinds: list[str] = []
    for d in devices:
        m = re.match(r"([A-Za-z]+)\d+\s*:", d)
        if m:
            kind = DEVICE_BACKENDS.get(m.group(1).lower(), m.group(1).lower())
            if kind not in kinds:
                kinds.append(kind)
    return "+".join(kinds) or "cpu"


def collect() -> dict:
    from ..engines.cpu import inspect_build
    from ..engines.discovery import LLAMA_TOOLS, find_llama
    from ..errors import EngineNotFound
    from ..gpu.probe import probe
    from ..paths import Paths
    from ..userconfig import config_path

    report = probe()
    engines = []
    backends = ["cpu", "vulkan", "cuda", "rocm"]  # one entry per distinct build found
    seen = set()
    for backend in backends:
        try:
            server = find_llama("llama-server", backend=backend)
        except EngineNotFound as exc:
            engines.append({"engine": "llama-server", "backend": backend, "looked_up_for": backend,
                            "found": False, "why": exc.message})
            continue
        if server.path in seen:
            continue
        seen.add(server.path)
        tools = {t: bool(server.sibling(t)) for t in LLAMA_TOOLS if t != "llama-server"}
        devices = _list_devices(server.path, server.env)
        cpu = inspect_build(server.path, server.env).to_dict()
        # "backend": what the build is (from its devices), not the backend it was looked up for
        engines.append({"engine": "llama-server", "backend": build_backend(devices), "looked_up_for": backend,
                        "found": True, "path": server.path, "source": server.source, "devices": devices,
                        "tools": tools, "cpu": cpu})
    vllm = shutil.which("vllm")
    paths = Paths.from_env()
    return {
        "python": sys.version.split()[0],
        "cpu": _cpu(),
        "gpus": [g.to_dict() for g in report.gpus],
        "gpu_tools": report.tools or {"nvidia-smi": "absent", "rocm-smi": "absent"},
        "engines": engines,
        "vllm": vllm or None,
        "docker": shutil.which("docker") or None,
        "podman": shutil.which("podman") or None,
        "containers": _containers(),
        "paths": {"state": str(paths.state), "logs": str(paths.logs), "models": str(paths.models),
                  "user_config": str(config_path(paths))},
    }


def _containers() -> list[dict]:
    """The container engines behind the `docker` and `podman` commands: engine, version, runtime."""
    from ..engines.launchers.docker import engine_info

    return [info for info in (engine_info("docker"), engine_info("podman")) if info]


def _container_line(c: dict) -> str:
    """`docker: /usr/bin/docker: podman 4.3.1, runtime runc 1.1.5` (or why the engine is not there)."""
    engine = " ".join(str(x) for x in (c.get("engine"), c.get("version")) if x)
    if c.get("runtime"):
        engine += f", runtime {c['runtime']}" + (f" {c['runtime_version']}" if c.get("runtime_version") else "")
    if c.get("error"):
        client = f"{c.get('engine') or c['command']} client {c['client_version']}" if c.get("client_version") else ""
        engine = "; ".join(x for x in (client or engine, f"engine not reachable: {c['error']}") if x)
    return f"{c['command']}: {c['path']}: {engine or 'unknown engine'}"


def _cpu() -> dict:
    """The CPU features llama.cpp builds care about, and whether the kernel grants AMX."""
    from ..engines.cpu import amx_granted, cpu_flags

    flags = cpu_flags()
    matter = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return {"features": [f for f in matter if f in flags], "amx_granted": amx_granted()}


def _cpu_lines(cpu: dict) -> list[str]:
    """doctor's lines for one build's CPU side."""
    if not cpu.get("features"):
        return ["  cpu: could not tell which CPU features it was compiled for"]
    kind = {"portable": "portable build", "native": "native build (compiled for its build machine's CPU)"}
    lines = [f"  cpu: {kind.get(cpu['kind'], cpu['kind'])}; uses {' '.join(cpu['features'])}"]
    if cpu.get("how"):
        lines.append(f"  built by llmctl's setup: {cpu['how']}")
    if cpu.get("problem"):
        lines.append(f"  WILL NOT RUN HERE: {cpu['problem']}; use a portable build "
                     "(`bash scripts/setup.sh` makes one) or set `binary:` / config `binaries:`")
    elif cpu.get("risk"):
        lines.append(f"  warning: {cpu['risk']}")
    return lines


def _a_build(backend: str) -> str:
    if backend == "unknown":
        return "a build whose devices could not be listed"
    name = {"cpu": "CPU-only", "cuda": "CUDA", "rocm": "ROCm", "vulkan": "Vulkan", "metal": "Metal"}
    kinds = "+".join(name.get(k, k) for k in backend.split("+"))
    return f"{'an' if kinds[0] in 'AEIOU' else 'a'} {kinds} build"


def doctor(json: JsonOpt = False) -> None:
    """List GPUs, drivers, engines found (with the devices each build sees) and tools."""
    info = collect()
    out = Output(json)
    if json:
        out.data(info)
        return
    out.text(f"python {info['python']}")
    amx = {None: "no AMX on this CPU", True: "the kernel grants AMX", False: "the kernel does NOT grant AMX"}
    out.text(f"cpu: {' '.join(info['cpu']['features']) or 'no AVX2'}; {amx[info['cpu']['amx_granted']]}")
    out.text("GPUs:" if info["gpus"] else "GPUs: none found (" + ", ".join(
        f"{k}: {v}" for k, v in info["gpu_tools"].items()) + ")")
    for g in info["gpus"]:
        out.text(f"  [{g['index']}] {g['vendor']} {g['name']}: {g['used_mib']}/{g['total_mib']} MiB used, "
                 f"driver {g['driver'] or '?'}")
    for e in info["engines"]:
        if not e["found"]:
            out.text(f"{e['engine']} ({e['backend']}): not found: {e['why']}")
            continue
        tools = ", ".join(t for t, ok in e["tools"].items() if ok) or "none"
        out.text(f"{e['engine']} ({e['backend']}): {e['path']} [from {e['source']}]")
        if e["looked_up_for"] != e["backend"]:
            out.text(f"  found for backend {e['looked_up_for']}, but it is {_a_build(e['backend'])}")
        out.text(f"  devices: {'; '.join(e['devices'])}")
        out.text(f"  tools beside it: {tools}")
        for line in _cpu_lines(e["cpu"]):
            out.text(line)
    out.text(f"vllm: {info['vllm'] or 'not on PATH (a profile can name its own `command:`)'}")
    for c in info["containers"]:
        out.text(_container_line(c))
    for cli in sorted({"docker", "podman"} - {c["command"] for c in info["containers"]}):
        out.text(f"{cli}: not found")
    for k, v in info["paths"].items():
        out.text(f"{k}: {v}")


COMMANDS = {"doctor": handle_errors(doctor)}
