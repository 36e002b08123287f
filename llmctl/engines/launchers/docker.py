"""The docker launcher: run the engine inside a named container (`launcher: docker`).

The keeper runs ``docker run --init --name llmctl-NAME ...`` attached (the client's output is
the server's log), stops it with ``docker stop -t STOP_TIMEOUT``, removes a stale stopped
container of the same name before starting, and asks ``docker inspect`` about the container
rather than trusting the client's pid. No ``--rm``: when the client exits, the container is
still there to be asked why (``State.ExitCode``, ``State.OOMKilled``); the keeper asks
(:func:`after_exit`), then removes it itself. A container the runtime refused never ran and has
no exit code of its own: the client's (126) and its error stand. Works with podman
(``docker: {command: podman}``, or podman-docker's ``docker``), tested with its runc runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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
    doc = inspect_all(docker, name)
    return None if doc is None else (doc.get("State") or {})


def inspect_all(docker: str, name: str) -> dict[str, Any] | None:
    """``docker inspect NAME``: the container's whole record (State, HostConfig...), or None."""
    try:
        r = subprocess.run([docker, "inspect", name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None


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


def never_started(state: dict[str, Any]) -> bool:
    """The container exists but never ran: the runtime failed to create or start it (podman's
    inspect then says Status "created", ExitCode 0; Docker's, ExitCode 127/128 and an Error).
    Both leave StartedAt at the zero time."""
    if state.get("Running"):
        return False
    return state.get("Status") in ("created", "configured") or str(state.get("StartedAt", "")).startswith("0001-")


def runtime_error(state: dict[str, Any], client_lines: list[str]) -> str:
    """Why the runtime did not start the container: Docker keeps it in State.Error; podman only
    prints it, as the client's last line on stderr (``Error: runc: runc create failed: ...``)."""
    said = str(state.get("Error") or "").strip()
    if not said:
        errors = [ln for ln in client_lines if "error" in ln.lower()]
        said = (errors or client_lines or ["the container runtime gave no reason"])[-1].strip()
    said = said.removeprefix("Error: ").removeprefix("docker: ")
    return said if len(said) <= 400 else said[:397] + "..."


def after_exit(docker: str, name: str, stop_timeout: float, code: int | None, sig: int | None,
               client_lines: Callable[[], list[str]] = list) -> Exit:
    """The ``docker run`` client exited with ``code``/``sig``: ask the container what happened.

    A container that still runs lost its client (killed): stop it. A container that never ran
    (the runtime refused it) has no exit code of its own: the client's (126...) stands and the
    runtime's error, from ``client_lines()`` (what the client printed), becomes the cause. Else
    take the exit code and OOMKilled from ``docker inspect`` (the client's status is only its
    own). Then remove the container, since there is no ``--rm``. Without a container to ask, the
    client's status stands.
    """
    out = Exit(code, sig)  # the container's exit code (State.ExitCode) replaces the client's below
    doc = inspect_all(docker, name)
    if doc is None:
        out.notes.append(f"container {name} not found by `{docker} inspect`: "
                         f"the exit status is the {docker} client's")
        return out
    state = doc.get("State") or {}
    if state.get("Running"):
        _lost_client(out, docker, name, stop_timeout)
    elif never_started(state):
        out.cause = f"container {name} never started: {runtime_error(state, client_lines())}"
        out.notes.append(f"container {name} never started (`{docker} inspect`: {state.get('Status')}, "
                         f"no start time): the exit status is the {docker} client's")
    else:
        _exited(out, docker, name, state, (doc.get("HostConfig") or {}).get("Memory"))
    if not remove_container(docker, name):
        out.notes.append(f"could not remove container {name}; `{docker} rm -f {name}` by hand")
    return out


def _lost_client(out: Exit, docker: str, name: str, stop_timeout: float) -> None:
    """The client is gone but its container still runs: stop it (its removal follows)."""
    how = f"signal {out.signal}" if out.signal else f"code {out.code}"
    out.notes.append(f"the {docker} client exited ({how}) but container {name} still runs: "
                     f"stopping and removing it")
    stop(docker, name, stop_timeout, remove=False)
    # we stopped it, so its exit code (0 after a clean SIGTERM) says nothing: the server
    # was lost with its client, which the restart policy must see as a failure
    if not out.signal and not out.code:
        out.code = 1


def _exited(out: Exit, docker: str, name: str, state: dict[str, Any], memory: object) -> None:
    """The container ran and exited: its exit code and OOM kill, as ``docker inspect`` says.
    Podman 4.3 on a cgroup-v1 host left OOMKilled false after a kernel OOM kill: a SIGKILL (137)
    under a memory limit is then named as the likely OOM kill, in the cause only (a stop that
    ended in SIGKILL gives 137 too, and its log must not blame memory)."""
    exit_code = state.get("ExitCode")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        out.code, out.signal = exit_code, None
        out.notes.append(f"container {name} exited with code {exit_code} (`{docker} inspect`)")
    if state.get("OOMKilled"):
        out.cause = f"container {OOM_NOTE}"
        out.notes.append(f"container {name} was {OOM_NOTE}")
    elif out.code == 137 and isinstance(memory, int) and memory > 0:
        out.cause = (f"container killed (SIGKILL) under its memory limit of {memory / 2**20:.0f} MiB: most "
                     f"likely by the kernel's OOM killer, which `{docker} inspect` does not report here")


def _output_since(fd: int, start: int, limit: int = 16384) -> list[str]:
    """The lines written to the log descriptor ``fd`` since offset ``start`` (at most the last
    ``limit`` bytes), without llmctl's own notes: what the container client printed."""
    try:
        end = os.fstat(fd).st_size
        start = start if start <= end else 0  # the log was rotated (copied and truncated) meanwhile
        data = os.pread(fd, min(limit, end - start), max(start, end - limit))
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("[llmctl ")]


def _cli(spec: LaunchSpec) -> str:
    return spec.container_cli or DEFAULT_CLI


class Docker:
    """Docker or podman (`docker: {command: podman}`): the engine comes with the image."""

    name = "docker"
    local_engine = False

    def __init__(self) -> None:
        #: container -> (the log descriptor its client writes to, the log's size at the start)
        self._client_log: dict[str, tuple[int, int]] = {}

    def render(self, profile: Profile, cmd: ServerCommand) -> Rendered:
        assert profile.docker is not None
        return Rendered(run_argv(profile, cmd), container_name(profile.name), profile.docker.command)

    def spawn(self, spec: LaunchSpec, spawner: Spawner[P], env: dict[str, str], log_fd: int) -> P:
        remove_stale(_cli(spec), spec.container)
        try:
            self._client_log[spec.container] = (log_fd, os.fstat(log_fd).st_size)
        except OSError:
            self._client_log.pop(spec.container, None)
        return spawner.spawn(spec.argv, env, log_fd)

    def stop(self, spec: LaunchSpec) -> None:
        """The container, by name; the keeper then stops the attached client."""
        stop(_cli(spec), spec.container, spec.stop_timeout, remove=False)

    def after_exit(self, spec: LaunchSpec, code: int | None, sig: int | None) -> Exit:
        where = self._client_log.get(spec.container)
        return after_exit(_cli(spec), spec.container, spec.stop_timeout, code, sig,
                          (lambda: _output_since(*where)) if where else list)

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


# -- `doctor`: which engine answers as `docker` / `podman` --------------------------------------
def engine_info(cli: str) -> dict[str, Any] | None:
    """What answers as ``cli`` (``docker`` may be Docker or podman-docker's podman): its path, the
    engine, its version and its OCI runtime (``CLI info``); None if there is no such program."""
    path = shutil.which(cli)
    if path is None:
        return None
    found: dict[str, Any] = {"command": cli, "path": path}
    try:
        r = subprocess.run([cli, "info", "--format", "json"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {**found, "error": f"`{cli} info` failed: {exc}"}
    try:
        data = json.loads(r.stdout)
    except ValueError:
        data = None
    if isinstance(data, dict):
        found.update(_podman_info(data) if "host" in data else _docker_info(data))
    if r.returncode != 0 or not isinstance(data, dict):
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("Emulate Docker CLI")]
        found["error"] = (lines or [f"`{cli} info` exited with code {r.returncode}"])[-1].strip()
    return found


def _podman_info(data: dict[str, Any]) -> dict[str, Any]:
    runtime = (data.get("host") or {}).get("ociRuntime") or {}
    words = str(runtime.get("version") or "").split("\n", 1)[0].split()  # "runc version 1.1.5+ds1"
    return {"engine": "podman", "version": (data.get("version") or {}).get("Version"),
            "runtime": runtime.get("name"), "runtime_version": words[-1] if words else None,
            "runtime_path": runtime.get("path")}


def _docker_info(data: dict[str, Any]) -> dict[str, Any]:
    client = (data.get("ClientInfo") or {}).get("Version")
    return {"engine": "docker", "version": data.get("ServerVersion") or None, "client_version": client,
            "runtime": data.get("DefaultRuntime") or None}
