"""The docker launcher: run the engine inside a named container (`launcher: docker`).

The keeper runs ``docker run --init --name llmctl-NAME ...`` attached (the client's output is
the server's log), stops it with ``docker stop -t STOP_TIMEOUT``, removes a stale stopped
container of the same name before starting, and asks ``docker inspect`` about the container
rather than trusting the client's pid. No ``--rm``: when the client exits, the container is
still there to be asked why (``State.ExitCode``, ``State.OOMKilled``); the keeper asks
(:func:`after_exit`), then removes it itself. Works with podman (``docker: {command: podman}``).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field, replace
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


ROCM_DEVICES = ("/dev/kfd", "/dev/dri")  #: what a ROCm container needs: the compute and render nodes


def rocm_devices(devices: list[str]) -> list[str]:
    """The profile's devices plus ``/dev/kfd`` and ``/dev/dri`` where it does not list them.
    A device counts as listed by its host path (``HOST[:CONTAINER[:PERMS]]``); a node under
    ``/dev/dri/`` (``/dev/dri/renderD128``: one GPU only) counts for ``/dev/dri``."""
    hosts = [dev.split(":", 1)[0].rstrip("/") for dev in devices]
    out = list(devices)
    for need in ROCM_DEVICES:
        if not any(h == need or h.startswith(need + "/") for h in hosts):
            out.append(need)
    return out


def run_argv(profile: Profile, spec: LaunchSpec, model_path: Path) -> tuple[list[str], list[str]]:
    """(docker run argv, env var names passed into the container). Values of those variables
    travel through the client's environment (``-e NAME``), never through argv."""
    d = profile.docker
    assert d is not None
    name = container_name(profile.name)
    argv = [d.command, "run", "--init", "--name", name,
            "-p", f"{profile.host}:{profile.port}:{profile.port}"]
    for dev in rocm_devices(d.devices) if profile.backend == "rocm" else d.devices:
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
    remove_container(docker, name)


def stop(docker: str, name: str, timeout: float, remove: bool = True) -> bool:
    """``docker stop -t TIMEOUT NAME`` (Docker sends SIGKILL after the timeout), then, unless
    ``remove`` is false, ``docker rm -f NAME``: we run without ``--rm``, so a stopped container
    stays until removed. False if the container CLI failed or hung."""
    try:
        r = subprocess.run([docker, "stop", "-t", str(int(round(timeout))), name], capture_output=True,
                           timeout=timeout + 30)
        ok = r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if remove:
        ok = remove_container(docker, name) and ok
    return ok


def remove_container(docker: str, name: str) -> bool:
    """``docker rm -f NAME``; True once no container of that name is left."""
    try:
        r = subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 or inspect(docker, name) is None


OOM_NOTE = "killed by the kernel's OOM killer (docker inspect: OOMKilled)"


@dataclass
class ContainerExit:
    """What the keeper records when the ``docker run`` client has exited."""

    code: int | None  #: the container's exit code (``State.ExitCode``), else the client's
    signal: int | None  #: the client's signal, only where docker could not say
    oom: bool = False  #: ``State.OOMKilled``
    notes: list[str] = field(default_factory=list)  #: lines for the server's log


def after_exit(docker: str, name: str, stop_timeout: float, code: int | None, sig: int | None) -> ContainerExit:
    """The ``docker run`` client exited with ``code``/``sig``: ask the container what happened.

    A container that still runs lost its client (killed): stop it. Then take the exit code and
    OOMKilled from ``docker inspect`` (the client's status is only its own), and remove the
    container, since there is no ``--rm``. Without a container to ask, the client's status stands.
    """
    out = ContainerExit(code, sig)
    state = inspect(docker, name)
    if state is None:
        out.notes.append(f"container {name} not found by `{docker} inspect`: "
                         f"the exit status is the {docker} client's")
        return out
    if state.get("Running"):
        how = f"signal {sig}" if sig else f"code {code}"
        out.notes.append(f"the {docker} client exited ({how}) but container {name} still runs: "
                         f"stopping and removing it")
        stop(docker, name, stop_timeout, remove=False)
        # we stopped it, so its exit code (0 after a clean SIGTERM) says nothing: the server
        # was lost with its client, which the restart policy must see as a failure
        if not remove_container(docker, name):
            out.notes.append(f"could not remove container {name}; `{docker} rm -f {name}` by hand")
        if not sig and not code:
            out.code = 1
        return out
    exit_code = state.get("ExitCode")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool) and not state.get("Running"):
        out.code, out.signal = exit_code, None
        out.notes.append(f"container {name} exited with code {exit_code} (`{docker} inspect`)")
    if state.get("OOMKilled"):
        out.oom = True
        out.notes.append(f"container {name} was {OOM_NOTE}")
    if not remove_container(docker, name):
        out.notes.append(f"could not remove container {name}; `{docker} rm -f {name}` by hand")
    return out
