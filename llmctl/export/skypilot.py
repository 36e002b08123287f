"""`llmctl export skypilot`: one `sky serve` service per profile (``sky serve up NAME.sky.yaml``).

The service runs the profile's image (``image_id: docker:...``) with the engine's args in
``run:``, on the GPUs its backend and devices ask for; its readiness probe is the health path with
the start timeout as the initial delay; one replica, as llmctl runs one server (the comment says
how to scale). The model is uploaded from this machine (``file_mounts``: `llmctl pull` it here
first); the API key is a SkyPilot secret (``sky serve up --secret VAR``), never in the file.
"""

from __future__ import annotations

from typing import Any

from ..paths import Paths
from ..profiles.schema import Config, Profile
from .command import Server, server
from .common import ExportFile, Options, gpu_count, header, said, seconds, servers, where
from .images import image_for
from .model import MODEL_MARK
from .yamlout import Note, dump

#: the GPUs a service may get, cheapest first by SkyPilot's choice (name one to pin it)
NVIDIA = ("L4", "A10G", "A100", "H100")
AMD = ("MI300X",)


def render(config: Config, names: list[str] | None, opts: Options, paths: Paths) -> list[ExportFile]:
    head = header("skypilot", config, names=names)
    return [ExportFile(f"{p.name}.sky.yaml", dump(task(server(p, paths), opts), head))
            for p in servers(config, names)]


def task(srv: Server, opts: Options) -> dict[str, Any]:
    p = srv.profile
    doc: dict[str, Any] = {"name": p.name, "service": service(p, srv), "resources": resources(p, opts)}
    env = srv.env_notes(keep_devices=False)
    if env:
        doc["envs"] = env
    if srv.key_var:
        doc["secrets"] = {srv.key_var: Note(None, f"`sky serve up --secret {srv.key_var}=...`: the server's "
                                                   f"key ({said(p, 'api_key_env')})")}
    mounts: dict[str, str | Note] = {srv.model.inside_dir: Note(srv.model.host_dir, srv.model.mount_note)}
    mounts.update({inside: here for here, inside in srv.mounts})
    doc["file_mounts"] = mounts
    doc["run"] = Note(run_script(srv), f"llmctl's {p.engine} builder, as `llmctl up` runs it")
    return doc


def service(p: Profile, srv: Server) -> dict[str, Any]:
    probe = {"path": srv.health_path,
             "initial_delay_seconds": Note(seconds(p.effective_start_timeout), said(p, "start_timeout")),
             "timeout_seconds": 5}
    policy = Note({"min_replicas": 1, "max_replicas": 1},
                  "one server, as llmctl runs it: raise max_replicas and set target_qps_per_replica to scale")
    return {"readiness_probe": probe, "replica_policy": policy}


def resources(p: Profile, opts: Options) -> dict[str, Any]:
    image = image_for(p, opts)
    out: dict[str, Any] = {"image_id": Note(f"docker:{image.value}", image.comment),
                           "ports": Note(p.port, said(p, "port"))}
    n = gpu_count(p)
    if n:
        names = AMD if p.backend == "rocm" else NVIDIA
        out["accelerators"] = Note({g: n for g in names},
                                   f"any of these, {n} each: backend {p.backend} ({where(p, 'backend')}), "
                                   f"{said(p, 'devices')}")
    elif p.threads and p.threads > 0:
        out["cpus"] = Note(f"{p.threads}+", said(p, "threads"))
    return out


def run_script(srv: Server) -> str:
    lines = []
    if MODEL_MARK in srv.args:
        d = srv.model.inside_dir
        lines.append(f"MODEL=\"{d}/$(sed -n 's/^ \"path\": \"\\(.*\\)\",$/\\1/p' {d}/manifest.json)\"")
    lines.append(f"exec {srv.shell_line()}")
    return "\n".join(lines) + "\n"
