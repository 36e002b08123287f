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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import StartFailed
from ...profiles.schema import Profile
from ..command import File, ServerCommand
from ..registry import Exit, P, Rendered, Spawner
from ..spec import LaunchSpec

if TYPE_CHECKING:
    from ..registry import Launcher

MODELS_DIR = "/models"
KEY_PATH = "/run/llmctl/api.key"
DEFAULT_CLI = "docker"


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


def _mount(f: File) -> tuple[str, str]:
    """(``-v`` value, path inside) for a file the server opens: the model's directory (or the
    model directory itself) under /models, the key file at a fixed path, any other file's
    directory under /ROLE."""
    p = Path(f.path)
    if f.role == "key":
        return f"{p}:{KEY_PATH}:ro", KEY_PATH
    if f.role == "model":
        inner = f"{MODELS_DIR}/{p.name}"
        return (f"{p}:{inner}:ro" if p.is_dir() else f"{p.parent}:{MODELS_DIR}:ro"), inner
    return f"{p.parent}:/{f.role}:ro", f"/{f.role}/{p.name}"


def _hardware(profile: Profile, devices: list[str]) -> list[str]:
    """The GPUs: ROCm's device nodes and the video group, or CUDA's ``--gpus``."""
    argv: list[str] = []
    for dev in rocm_devices(devices) if profile.backend == "rocm" else devices:
        argv += ["--device", dev]
    if profile.backend == "rocm":
        argv += ["--group-add", "video"]
    elif profile.backend == "cuda":
        argv += ["--gpus", _gpus(profile.devices)]
    return argv


def run_argv(profile: Profile, cmd: ServerCommand) -> list[str]:
    """The ``docker run`` argv for the engine's command: its files mounted read-only and named
    by their paths inside, the server bound to every interface inside (``-p`` decides the
    exposure), the image's entrypoint as the engine. Environment variables pass by name
    (``-e NAME``): their values travel through the client's environment, never argv."""
    d = profile.docker
    assert d is not None
    argv = [d.command, "run", "--init", "--name", container_name(profile.name),
            "-p", f"{profile.host}:{profile.port}:{profile.port}", *_hardware(profile, d.devices)]
    inside: dict[File, str] = {}
    for f in cmd.files():
        volume, inside[f] = _mount(f)
        argv += ["-v", volume]
    for name in sorted((set(cmd.env) | set(cmd.env_from)) - {"LD_LIBRARY_PATH"}):
        argv += ["-e", name]
    argv += [*d.options, d.image]
    return argv + cmd.argv(program=False, place=inside.__getitem__, bind="0.0.0.0")


# -- what the keeper and `down` ask of the container CLI ---------------------------------------
def inspect(docker: str, name: str) -> dict[str, Any] | None:
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


def after_exit(docker: str, name: str, stop_timeout: float, code: int | None, sig: int | None) -> Exit:
    """The ``docker run`` client exited with ``code``/``sig``: ask the container what happened.

    A container that still runs lost its client (killed): stop it. Then take the exit code and
    OOMKilled from ``docker inspect`` (the client's status is only its own), and remove the
    container, since there is no ``--rm``. Without a container to ask, the client's status stands.
    """
    out = Exit(code, sig)  # the container's exit code (State.ExitCode) replaces the client's below
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
        out.cause = f"container {OOM_NOTE}"
        out.notes.append(f"container {name} was {OOM_NOTE}")
    if not remove_container(docker, name):
        out.notes.append(f"could not remove container {name}; `{docker} rm -f {name}` by hand")
    return out


def _cli(spec: LaunchSpec) -> str:
    return spec.container_cli or DEFAULT_CLI


class Docker:
    """Docker or podman (`docker: {command: podman}`): the engine comes with the image."""

    name = "docker"
    local_engine = False

    def render(self, profile: Profile, cmd: ServerCommand) -> Rendered:
        assert profile.docker is not None
        return Rendered(run_argv(profile, cmd), container_name(profile.name), profile.docker.command)

    def spawn(self, spec: LaunchSpec, spawner: Spawner[P], env: dict[str, str], log_fd: int) -> P:
        remove_stale(_cli(spec), spec.container)
        return spawner.spawn(spec.argv, env, log_fd)

    def stop(self, spec: LaunchSpec) -> None:
        """The container, by name; the keeper then stops the attached client."""
        stop(_cli(spec), spec.container, spec.stop_timeout, remove=False)

    def after_exit(self, spec: LaunchSpec, code: int | None, sig: int | None) -> Exit:
        return after_exit(_cli(spec), spec.container, spec.stop_timeout, code, sig)

    def inspect(self, spec: LaunchSpec) -> dict[str, Any] | None:
        """Running, Status, ExitCode, OOMKilled, StartedAt and Pid (on the host) from `docker inspect`."""
        state = inspect(_cli(spec), spec.container)
        if state is None:
            return {"name": spec.container, "exists": False}
        keep = ("Status", "Running", "ExitCode", "OOMKilled", "StartedAt", "Pid")
        return {"name": spec.container, "exists": True, **{k: state.get(k) for k in keep if k in state}}

    def logs_argv(self, spec: LaunchSpec, lines: int, follow: bool) -> list[str] | None:
        """``docker logs`` of a container that is there; None without one (read the log file)."""
        if inspect(_cli(spec), spec.container) is None:
            return None
        return [_cli(spec), "logs", "--tail", str(lines), *(["-f"] if follow else []), spec.container]

    def cleanup(self, spec: LaunchSpec) -> bool:
        """A container outlives its client: stop a running one by name (and remove it), remove
        an exited one never removed (its keeper died first)."""
        info = inspect(_cli(spec), spec.container)
        if (info or {}).get("Running"):
            stop(_cli(spec), spec.container, spec.stop_timeout)
            return True
        if info is not None:
            remove_container(_cli(spec), spec.container)
        return False


LAUNCHER: Launcher = Docker()
