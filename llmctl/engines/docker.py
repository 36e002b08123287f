"""The docker launcher: run the engine inside a named container (`launcher: docker`).

The keeper runs ``docker run --rm --init --name llmctl-NAME ...`` attached (the client's
output is the server's log), stops it with ``docker stop -t STOP_TIMEOUT``, removes a stale
stopped container of the same name before starting, and asks ``docker inspect`` about the
container rather than trusting the client's pid. Works with podman (``docker: {command: podman}``).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

from ..errors import StartFailed
from ..paths import Paths
from ..profiles.schema import Profile
from ..supervise.spec import LaunchSpec

MODELS_DIR = "/models"
KEY_PATH = "/run/llmctl/api.key"


def container_name(profile_name: str) -> str:
    return f"llmctl-{profile_name}"


def _gpus(devices: list[str]) -> str:
    if not devices:
        return "all"
    return f"device={devices[0]}" if len(devices) == 1 else '"device=' + ",".join(devices) + '"'


def run_argv(profile: Profile, spec: LaunchSpec, model_path: Path) -> tuple[list[str], list[str]]:
    """(docker run argv, env var names passed into the container). Values of those variables
    travel through the client's environment (``-e NAME``), never through argv."""
    d = profile.docker
    assert d is not None
    name = container_name(profile.name)
    argv = [d.command, "run", "--rm", "--init", "--name", name,
            "-p", f"{profile.host}:{profile.port}:{profile.port}"]
    for dev in d.devices:
        argv += ["--device", dev]
    if profile.backend == "rocm":
        argv += ["--group-add", "video"]
    elif profile.backend == "cuda":
        argv += ["--gpus", _gpus(profile.devices)]
    model_path = Path(model_path)
    if model_path.is_dir():
        inner_model = f"{MODELS_DIR}/{model_path.name}"
        argv += ["-v", f"{model_path}:{inner_model}:ro"]
    else:
        inner_model = f"{MODELS_DIR}/{model_path.name}"
        argv += ["-v", f"{model_path.parent}:{MODELS_DIR}:ro"]
    server = list(spec.argv[1:])  # the engine's own flags; the image's entrypoint is the engine
    if spec.engine == "vllm":
        server = _vllm_inner(spec.argv, str(model_path), inner_model)
    else:
        server = [inner_model if a == str(model_path) else a for a in server]
    # inside the container the server must listen on all interfaces; -p above decides exposure
    for i, a in enumerate(server[:-1]):
        if a == "--host":
            server[i + 1] = "0.0.0.0"
        if a == "--api-key-file":
            argv += ["-v", f"{server[i + 1]}:{KEY_PATH}:ro"]
            server[i + 1] = KEY_PATH
        if a == "--mmproj":
            mm = Path(server[i + 1])
            argv += ["-v", f"{mm.parent}:/mmproj:ro"]
            server[i + 1] = f"/mmproj/{mm.name}"
    env_names = sorted(set(spec.env) | set(spec.env_from))
    env_names = [n for n in env_names if n != "LD_LIBRARY_PATH"]
    for n in env_names:
        argv += ["-e", n]
    argv += list(d.options)
    argv.append(d.image)
    argv += server
    return argv, env_names


def _vllm_inner(argv: list[str], model: str, inner_model: str) -> list[str]:
    """vLLM images start `vllm serve` / the api_server themselves: keep only model + flags."""
    i = argv.index(model)
    rest = argv[i + 1:]
    return ["--model", inner_model, *rest] if argv[i - 1] == "--model" else [inner_model, *rest]


def containerize(profile: Profile, spec: LaunchSpec, model_path: Path, paths: Paths) -> LaunchSpec:
    argv, _ = run_argv(profile, spec, model_path)
    return replace(spec, argv=argv, launcher="docker", container=container_name(profile.name),
                   docker_command=profile.docker.command)


# -- what the keeper and `down` ask of the container CLI ---------------------------------------
def inspect(docker: str, name: str) -> dict | None:
    """The container's State (Running, ExitCode, OOMKilled...), or None if there is none."""
    try:
        r = subprocess.run([docker, "inspect", name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    try:
        data = json.loads(r.stdout)
        return data[0].get("State", {}) if data else None
    except (ValueError, IndexError, AttributeError):
        return None


def remove_stale(docker: str, name: str) -> None:
    """Before a start: remove a stopped container of our name; refuse a running one."""
    state = inspect(docker, name)
    if state is None:
        return
    if state.get("Running"):
        raise StartFailed(f"container {name} is already running outside llmctl's supervision; "
                          f"`{docker} stop {name}` (or `llmctl down`) first", name=name.removeprefix("llmctl-"))
    subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)


def stop(docker: str, name: str, timeout: float) -> None:
    subprocess.run([docker, "stop", "-t", str(int(round(timeout))), name], capture_output=True,
                   timeout=timeout + 30)
