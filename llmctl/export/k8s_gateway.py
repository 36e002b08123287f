"""The llmctl gateway in Kubernetes: a ConfigMap with the same tasks and each exported server as
an ``engine: remote`` profile at its Service, a Deployment running `llmctl serve` on it, and a
Service. Clients use ``http://llmctl-gateway:8800/v1`` with a task or profile name as ``model``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from ..engines.vllm import served_name
from ..profiles.schema import Config, Profile, Sampling, Task
from .common import GATEWAY_PORT, KEYS_SECRET, ROOT, ExportFile, Options, header, said, where
from .kube import metadata
from .yamlout import Note, dump, dump_all

NAME = "llmctl-gateway"
CONFIG_DIR = "/etc/llmctl"
KEY_VAR = "LLMCTL_GATEWAY_KEY"  #: what `llmctl serve` reads its clients' key from


def gateway(config: Config, profiles: list[Profile], objects: dict[str, str], opts: Options) -> ExportFile:
    text = remote_profiles(config, profiles, objects)
    notes = ["", f"The gateway's clients send the key in the Secret {KEYS_SECRET}, entry {KEY_VAR}:",
             f"  kubectl create secret generic {KEYS_SECRET} --from-literal={KEY_VAR}=... (with the servers' keys)",
             f"Reach it with `kubectl port-forward svc/{NAME} {GATEWAY_PORT}` or an Ingress."]
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(NAME, "gateway", opts),
                  "data": {"profiles.yaml": text}}
    docs = [dump(config_map, header("k8s", config, *notes)), dump(deployment(profiles, text, opts)),
            dump(service(opts))]
    return ExportFile(f"{NAME}.yaml", dump_all(docs))


def remote_profiles(config: Config, profiles: list[Profile], objects: dict[str, str]) -> str:
    """The gateway's profile file: the servers at their Services, the tasks that use them."""
    exported = {p.name for p in profiles}
    out: dict[str, Any] = {"profiles": {p.name: remote(p, objects.get(p.name)) for p in profiles}}
    tasks = {name: task_entry(t, exported) for name, t in config.tasks.items() if t.profile in exported}
    if tasks:
        out["tasks"] = tasks
    sampling = _set_fields(config.defaults.sampling, Sampling())
    if sampling:
        out["defaults"] = {"sampling": sampling}
    lines = ["Each server is the Service of its Deployment: this gateway neither starts nor stops them."]
    left = sorted(set(config.tasks) - set(tasks))
    if left:
        lines.append(f"Left out, their profile is not exported: tasks {', '.join(left)}.")
    return dump(out, lines)


def remote(p: Profile, obj: str | None) -> Any:
    """A server as the gateway's remote profile: at its Service, or (a remote profile already)
    where it was."""
    if obj is None:
        url = Note(p.url, f"as written ({where(p, 'url')}): a server outside this export")
    else:
        url = Note(f"http://{obj}:{p.port}", f"the Service {obj}, {said(p, 'port')}")
    entry: dict[str, Any] = {"engine": "remote", "url": url}
    model = served_name(p) if p.engine == "vllm" else (p.model if p.remote else p.alias)
    if model:
        entry["model"] = Note(model, "the name its server answers to")
    for key, blank in (("api_key_env", None), ("health", None), ("verify", True), ("embeddings", False),
                       ("max_concurrent", None), ("description", "")):
        value = getattr(p, key)
        if value != blank and (p.remote or key not in ("health", "verify")):
            entry[key] = Note(value, said(p, key)) if key != "description" else value
    return Note(entry, f"{p.engine} profile at {where(p, '')}")


def task_entry(t: Task, exported: set[str]) -> Any:
    entry = {"profile": t.profile, **_set_fields(t, Task(profile=t.profile))}
    dropped = [f for f in t.fallback if f not in exported]
    if t.fallback:
        entry["fallback"] = [f for f in t.fallback if f in exported]
        if not entry["fallback"]:
            del entry["fallback"]
    note = f"{where(t, '')}" + (f"; fallback {', '.join(dropped)} left out (not exported)" if dropped else "")
    return Note(entry, note)


def _set_fields(obj: Any, blank: Any) -> dict[str, Any]:
    """The public fields of a task or sampling block that differ from a blank one, in order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if value != getattr(blank, f.name):
            out[f.name] = list(value) if isinstance(value, list) else value
    return out


def deployment(profiles: list[Profile], text: str, opts: Options) -> dict[str, Any]:
    digest = hashlib.sha256(text.encode()).hexdigest()
    pod = {"metadata": {"labels": metadata(NAME, "gateway", opts)["labels"],
                        "annotations": {"llmctl/profiles-sha256": Note(digest, "a new ConfigMap rolls the gateway")}},
           "spec": {"automountServiceAccountToken": False, "containers": [container(profiles, opts)],
                    "volumes": [{"name": "profiles", "configMap": {"name": NAME}},
                                {"name": "state", "emptyDir": {}}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(NAME, "gateway", opts),
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/instance": NAME}},
                     "template": pod}}


def container(profiles: list[Profile], opts: Options) -> dict[str, Any]:
    argv = ["llmctl", "-f", f"{CONFIG_DIR}/profiles.yaml", "serve", "--host", "0.0.0.0",
            "--port", str(GATEWAY_PORT)]
    env: list[Any] = [{"name": "LLMCTL_HOME", "value": ROOT},
                      Note({"name": KEY_VAR, "valueFrom": {"secretKeyRef": {"name": KEYS_SECRET, "key": KEY_VAR}}},
                           "the key clients send: required, as the gateway listens beyond loopback")]
    for var in sorted({p.api_key_env for p in profiles if p.api_key_env}):
        env.append(Note({"name": var, "valueFrom": {"secretKeyRef": {"name": KEYS_SECRET, "key": var}}},
                        "a server's key, sent upstream by the gateway"))
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    return {"name": "gateway", "image": Note(opts.llmctl_image, "--llmctl-image"), "command": argv, "env": env,
            "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
            "readinessProbe": probe, "livenessProbe": dict(probe),
            "volumeMounts": [{"name": "profiles", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": "state", "mountPath": ROOT}]}


def service(opts: Options) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(NAME, "gateway", opts),
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/instance": NAME},
                     "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}]}}
