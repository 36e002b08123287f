"""`llmctl export compose`: one Compose file, a service per profile.

Each service runs the profile's image with the args of the engine's builder, publishes its port
on the profile's host (loopback unless the profile says otherwise), mounts the model's directory
from this machine read-only, passes ROCm's device nodes (and Vulkan's render nodes) or reserves
CUDA GPUs, checks the health path, and restarts as ``restart:`` says. `llmctl run` with the
same profiles uses these servers as they are (they answer /health at the profile's URL).
Compose reads ``$`` in values as its own variables: the export writes ``$$`` where a ``$`` is
meant, and ``${VAR:?...}`` where the API key comes from the environment of `compose up`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engines.launchers.docker import rocm_devices
from ..paths import Paths
from ..profiles.schema import CONTAINER_KEY, Config, Profile
from .command import Server, server
from .common import ExportFile, Options, gpu_count, header, said, seconds, servers, where
from .images import image_for
from .yamlout import Note, dump

#: restart: -> Compose's policy (`always` as unless-stopped: `llmctl down` stops a server for good,
#: as `compose stop` does; a plain `always` would bring it back when the engine restarts)
RESTART = {"no": "no", "on-failure": "on-failure", "always": "unless-stopped"}
#: `docker:` options with a Compose key, each taking one value
OPTIONS = {"--security-opt": "security_opt", "--shm-size": "shm_size", "--ipc": "ipc", "--group-add": "group_add",
           "--cap-add": "cap_add", "--device": "devices", "-v": "volumes", "--volume": "volumes"}
SINGLE = ("shm_size", "ipc")  #: keys that take one value, not a list


def project_name(config: Config) -> str:
    stem = Path(config.files[0]).stem if config.files else "profiles"
    return "llmctl-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in stem.lower())


def render(config: Config, names: list[str] | None, opts: Options, paths: Paths) -> list[ExportFile]:
    services = {p.name: service(server(p, paths), opts) for p in servers(config, names)}
    doc = {"name": project_name(config), "services": services}
    return [ExportFile("compose.yaml", dump(doc, header("compose", config, names=names)))]


def esc(value: Any) -> Any:
    """A value with each ``$`` doubled (Compose reads ``$$`` as one ``$``)."""
    if isinstance(value, Note):
        return Note(esc(value.value), value.comment)
    if isinstance(value, list):
        return [esc(v) for v in value]
    return value.replace("$", "$$") if isinstance(value, str) else value


def service(srv: Server, opts: Options) -> dict[str, Any]:
    p = srv.profile
    s: dict[str, Any] = {"image": image_for(p, opts)}
    wrapper = srv.wrapper()
    if wrapper is not None:
        s["entrypoint"] = Note(esc(wrapper), "reads the file `llmctl pull` chose from the manifest, then runs "
                                             "the image's server")
    s["command"] = Note(esc(srv.annotated_args()), f"llmctl's {p.engine} builder, as `llmctl up` runs it")
    env = environment(srv)
    if env:
        s["environment"] = env
    s["ports"] = [Note(f"{_host(p.host)}:{p.port}:{p.port}", f"{said(p, 'host')}, {said(p, 'port')}")]
    s["volumes"] = [Note(f"{srv.model.host_dir}:{srv.model.inside_dir}:ro", srv.model.mount_note)]
    s["volumes"] += [f"{here}:{inside}:ro" for here, inside in srv.mounts]
    s.update(hardware(p))
    s.update(docker_options(p))
    if p.engine == "vllm" and "ipc" not in s:
        s["ipc"] = Note("host", "vLLM's workers share memory (its docs run the image with --ipc=host)")
    s["healthcheck"] = healthcheck(srv)
    s["restart"] = Note(RESTART[p.restart], said(p, "restart"))
    s["stop_grace_period"] = Note(f"{seconds(p.stop_timeout)}s", said(p, "stop_timeout"))
    return s


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def environment(srv: Server) -> dict[str, Any]:
    p = srv.profile
    # CUDA GPUs are chosen by device_ids (and renumbered from 0 inside): its variable would
    # pick the wrong one; ROCm's and Vulkan's see every GPU of the nodes passed, so theirs stay
    env: dict[str, Any] = {k: esc(v) for k, v in srv.env_notes(keep_devices=p.backend != "cuda").items()}
    if srv.key_var and p.api_key_env:
        var = p.api_key_env
        env[srv.key_var] = Note(f"${{{var}:?set {var} to the server's API key}}",
                                f"from the environment of `compose up` ({said(p, 'api_key_env')})")
    return env


def hardware(p: Profile) -> dict[str, Any]:
    """ROCm: the compute and render nodes and the video group; Vulkan: the render nodes; CUDA: a
    GPU reservation for the profile's devices (or the count it needs)."""
    given = p.docker.devices if p.docker else []
    why = f"backend {p.backend} ({where(p, 'backend')})"
    if p.backend == "rocm":
        return {"devices": Note(rocm_devices(given), why), "group_add": ["video"]}
    if p.backend == "vulkan":
        return {"devices": Note(given or ["/dev/dri"], why)}
    if p.backend != "cuda":
        return {"devices": Note(given, said(p, CONTAINER_KEY))} if given else {}
    gpu: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
    if p.devices:
        gpu["device_ids"] = Note(list(p.devices), said(p, "devices"))
    else:
        gpu["count"] = gpu_count(p)
    return {"deploy": Note({"resources": {"reservations": {"devices": [gpu]}}}, why)}


def docker_options(p: Profile) -> dict[str, Any]:
    """The profile's `docker.options` that have a Compose key; the rest named in a comment."""
    out: dict[str, Any] = {}
    words = list(p.docker.options) if p.docker else []
    left: list[str] = []
    while words:
        word = words.pop(0)
        flag, eq, value = word.partition("=")
        if flag in OPTIONS and (eq or words):
            key = OPTIONS[flag]
            value = value if eq else words.pop(0)
            if key in SINGLE:
                out[key] = value
            else:
                out.setdefault(key, []).append(value)
        else:
            left.append(word)
    notes = {k: Note(v, said(p, CONTAINER_KEY)) for k, v in out.items()}
    if left:
        notes["x-llmctl-untranslated"] = Note(left, "docker.options with no Compose key: add them by hand")
    return notes


def healthcheck(srv: Server) -> Any:
    p = srv.profile
    test = ["CMD", "curl", "-fsS", f"http://127.0.0.1:{p.port}{srv.health_path}"]
    return Note({"test": test, "interval": f"{seconds(p.health_interval)}s", "timeout": "5s",
                 "retries": p.health_failures, "start_period": f"{seconds(p.effective_start_timeout)}s"},
                f"{said(p, 'health_interval')}, {said(p, 'health_failures')}, {said(p, 'start_timeout')}")
