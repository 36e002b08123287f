"""`llmctl export k8s`: per profile a PersistentVolumeClaim for its model, a Deployment and a
Service; the gateway's Deployment, Service and ConfigMap come from :mod:`.k8s_gateway`.

Mapped from the profile: the image (:mod:`.images`), the args (the engine's builder, as `up`),
GPUs as ``nvidia.com/gpu`` / ``amd.com/gpu`` limits (the device plugin picks which), the start
timeout as a startup probe on the health path, ``health_interval`` / ``health_failures`` as the
readiness probe (and a liveness probe where ``restart_unhealthy`` asks for restarts),
``stop_timeout`` as the grace period before SIGKILL, the API key from the Secret
:data:`~.common.KEYS_SECRET`. A model `llmctl pull` can fetch is pulled by an init container into
the volume; any other model must be copied there.
"""

from __future__ import annotations

import math
from typing import Any

from ..paths import Paths
from ..profiles.schema import Config, Profile
from .command import Server, server
from .common import KEYS_SECRET, ROOT, ExportFile, Options, gpu_count, header, said, seconds, selected, where
from .images import image_for
from .k8s_gateway import gateway
from .kube import check_names, labels, metadata
from .yamlout import Note, dump, dump_all

GPU_RESOURCE = {"cuda": "nvidia.com/gpu", "rocm": "amd.com/gpu", "vulkan": "nvidia.com/gpu"}
DEFAULT_STORAGE_GIB = 100  #: the model volume's size when this machine does not have the model
STARTUP_PERIOD = 10  #: seconds between startup probes (the start timeout is spread over them)
def render(config: Config, names: list[str] | None, opts: Options, paths: Paths) -> list[ExportFile]:
    profiles = selected(config, names)
    local = [p for p in profiles if not p.remote]
    objects = check_names(local)
    files = []
    for p in local:
        srv = server(p, paths)
        docs = [dump(volume(srv, objects[p.name], opts), header("k8s", config, *_secrets_note([p]))),
                dump(deployment(srv, objects[p.name], opts)), dump(service(p, objects[p.name], opts))]
        files.append(ExportFile(f"{objects[p.name]}.yaml", dump_all(docs)))
    files.append(gateway(config, profiles, objects, opts))
    return files


def _secrets_note(profiles: list[Profile]) -> list[str]:
    keys = sorted({p.api_key_env for p in profiles if p.api_key_env})
    if not keys:
        return []
    literal = " ".join(f"--from-literal={k}=..." for k in keys)
    return ["", f"API keys come from the Secret {KEYS_SECRET} (never from this file):",
            f"  kubectl create secret generic {KEYS_SECRET} {literal}"]


def volume(srv: Server, name: str, opts: Options) -> dict[str, Any]:
    """The model's PersistentVolumeClaim (ReadWriteOnce: one pod at a time, see the Recreate strategy)."""
    m = srv.model
    if m.size:
        size = Note(f"{math.ceil(m.size * 1.1 / 2**30) + 1}Gi", "the model's size on this machine, plus 10%")
    else:
        size = Note(f"{DEFAULT_STORAGE_GIB}Gi", "this machine does not have the model: set its size")
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if opts.storage_class:
        spec["storageClassName"] = Note(opts.storage_class, "--storage-class")
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": metadata(f"{name}-models", "model", opts), "spec": spec}


def service(p: Profile, name: str, opts: Options) -> dict[str, Any]:
    port = {"name": "http", "port": Note(p.port, said(p, "port")), "targetPort": "http"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, "server", opts),
            "spec": {"type": Note("ClusterIP", f"inside the cluster only, as host: {p.host} keeps it on this "
                                               f"machine ({where(p, 'host')}); the gateway is the way in"),
                     "selector": {"app.kubernetes.io/instance": name}, "ports": [port]}}


def deployment(srv: Server, name: str, opts: Options) -> dict[str, Any]:
    p = srv.profile
    pod: dict[str, Any] = {
        "automountServiceAccountToken": Note(False, "the server needs no Kubernetes API"),
        "terminationGracePeriodSeconds": Note(seconds(p.stop_timeout), f"SIGTERM, then SIGKILL after "
                                                                       f"{said(p, 'stop_timeout')}"),
    }
    if srv.model.pull:
        pod["initContainers"] = [pull_container(srv, opts)]
    pod["containers"] = [container(srv, opts)]
    pod["volumes"] = volumes(srv, name)
    restart = "always restarted (a Deployment cannot stop for good)" if p.restart == "no" else "restarted"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, "server", opts),
            "spec": {"replicas": 1,
                     "strategy": Note({"type": "Recreate"}, "one GPU and a ReadWriteOnce volume: the old pod "
                                                            "goes before the new one starts"),
                     "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
                     "template": Note({"metadata": {"labels": labels(name, "server")}, "spec": pod},
                                      f"exits are {restart} with Kubernetes' own capped backoff "
                                      f"(restart: {p.restart}, {where(p, 'restart')})")}}


def volumes(srv: Server, name: str) -> list[Any]:
    out: list[Any] = [{"name": "models", "persistentVolumeClaim": {"claimName": f"{name}-models"}}]
    if srv.profile.engine == "vllm":
        out.append(Note({"name": "shm", "emptyDir": {"medium": "Memory"}}, "vLLM's shared memory between workers"))
    return out


def pull_container(srv: Server, opts: Options) -> dict[str, Any]:
    """The init container that pulls the model into the volume (a no-op once it is there)."""
    m = srv.model
    assert m.pull is not None
    argv: list[Any] = ["llmctl", "pull", Note(m.pull, said(srv.profile, "model"))]
    if m.revision:
        argv += ["--revision", Note(m.revision, "the commit this machine pulled")]
    env = [{"name": "LLMCTL_HOME", "value": Note(ROOT, "the volume is an llmctl home: models/ is its store")},
           {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": KEYS_SECRET, "key": "HF_TOKEN",
                                                                "optional": True}}}]
    return {"name": "pull", "image": Note(opts.llmctl_image, "--llmctl-image"), "command": argv, "env": env,
            "volumeMounts": [{"name": "models", "mountPath": ROOT}]}


def container(srv: Server, opts: Options) -> dict[str, Any]:
    p = srv.profile
    c: dict[str, Any] = {"name": p.engine, "image": image_for(p, opts)}
    wrapper = srv.wrapper()
    if wrapper is not None:
        c["command"] = Note(wrapper, "reads the file `llmctl pull` chose from the store entry's manifest, then "
                                     "runs the image's server")
    c["args"] = Note(srv.annotated_args(), f"llmctl's {p.engine} builder, as `llmctl up` runs it")
    env = _env(srv)
    if env:
        c["env"] = env
    c["ports"] = [{"name": "http", "containerPort": Note(p.port, said(p, "port"))}]
    c["resources"] = resources(p)
    c.update(probes(srv))
    mounts: list[Any] = [{"name": "models", "mountPath": ROOT, "readOnly": True}]
    if p.engine == "vllm":
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    c["volumeMounts"] = mounts
    return c


def _env(srv: Server) -> list[Any]:
    out: list[Any] = []
    for k, v in srv.env_notes(keep_devices=False).items():
        value, note = (v.value, v.comment) if isinstance(v, Note) else (v, "")
        out.append(Note({"name": k, "value": value}, note))
    if srv.key_var:
        ref = {"secretKeyRef": {"name": KEYS_SECRET, "key": srv.profile.api_key_env}}
        out.append(Note({"name": srv.key_var, "valueFrom": ref}, f"the server's API key, from the Secret "
                                                                  f"({said(srv.profile, 'api_key_env')})"))
    return out


def resources(p: Profile) -> Any:
    n = gpu_count(p)
    if n:
        why = f"backend {p.backend} ({where(p, 'backend')}), {n} GPU(s) from {said(p, 'devices')}"
        if p.backend == "vulkan":
            why += "; Vulkan runs on any vendor: amd.com/gpu on AMD nodes"
        return Note({"limits": {GPU_RESOURCE[p.backend]: n}}, why)
    if p.threads and p.threads > 0:
        return {"requests": {"cpu": Note(p.threads, said(p, "threads"))}}
    return {}


def probes(srv: Server) -> dict[str, Any]:
    p = srv.profile
    get = {"path": srv.health_path, "port": "http"}
    start = p.effective_start_timeout
    out: dict[str, Any] = {
        "startupProbe": Note({"httpGet": get, "periodSeconds": STARTUP_PERIOD, "timeoutSeconds": 5,
                              "failureThreshold": max(1, math.ceil(start / STARTUP_PERIOD))},
                             f"up to {start:g} s to load: {said(p, 'start_timeout')}"),
        "readinessProbe": Note({"httpGet": get, "periodSeconds": seconds(p.health_interval), "timeoutSeconds": 5,
                                "failureThreshold": p.health_failures},
                               f"{said(p, 'health_interval')}, {said(p, 'health_failures')}"),
    }
    if p.restart_unhealthy:
        out["livenessProbe"] = Note(dict(out["readinessProbe"].value),
                                    f"restarts an unhealthy server: {said(p, 'restart_unhealthy')}")
    return out
