"""What Ollama's ``/api/tags``, ``/api/show`` and ``/api/ps`` say of the profiles and tasks:
sizes, format, family, parameter count, quantization and context from each profile's model file
(the GGUF header; a vLLM model's directory and its config.json). Blocking (file reads): the
gateway calls these in a worker thread. A file's facts are kept while its size and time stay.

``digest`` is an id llmctl derives from the model file's path, size and time (Ollama's is the
hash of its manifest; hashing gigabytes to list models would take minutes); a task's id differs
from its profile's. A profile whose model is not there yet (not pulled) is listed with size 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlmctlError
from ..inference.params import merge
from ..paths import Paths
from ..profiles.schema import Config, Profile
from .ollama import JSON, SAMPLING_OPTIONS, context_size
from .ollama_reply import timestamp

FOREVER = "9999-12-31T23:59:59Z"  #: /api/ps ``expires_at`` of a server without an idle TTL
#: llmctl sampling key -> Ollama's option name (for /api/show's parameters)
OLLAMA_NAMES = {v: k for k, v in SAMPLING_OPTIONS.items()}


@dataclass(frozen=True)
class ModelFile:
    """A profile's model, as the Ollama lists describe it."""

    path: str = ""
    size: int = 0  #: bytes on disk (every part of a split GGUF; every file of a directory)
    modified: float = 0.0
    format: str = ""  #: gguf | safetensors
    family: str = ""  #: the architecture (llama, gemma3...)
    parameter_size: str = ""  #: e.g. 135M, 7.6B
    quantization: str = ""  #: e.g. Q4_K_M
    context_length: int | None = None  #: the model's trained context
    info: JSON = field(default_factory=dict)  #: /api/show's model_info
    digest: str = ""


_FACTS: dict[tuple[str, int, int], ModelFile] = {}


def model_file(profile: Profile, paths: Paths) -> ModelFile:
    """The facts of ``profile``'s model file; empty when it is not there (not pulled yet)."""
    from ..models.resolve import resolve_model

    try:
        path = resolve_model(profile, paths)
        st = path.stat()
    except (LlmctlError, OSError):
        return ModelFile()
    key = (str(path), st.st_size, st.st_mtime_ns)
    found = _FACTS.get(key)
    if found is None:
        digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()
        found = _FACTS[key] = _directory(path, st.st_mtime, digest) if path.is_dir() else \
            _gguf(path, st.st_mtime, digest)
    return found


def _gguf(path: Path, modified: float, digest: str) -> ModelFile:
    from ..models.gguf import split_parts
    from ..models.gguf_info import gguf_facts

    size = sum(p.stat().st_size for p in split_parts(path) if p.exists()) or path.stat().st_size
    try:
        f = gguf_facts(path)
    except Exception:  # noqa: BLE001 - a file whose header cannot be read is still listed, by size
        f = {}
    arch = f.get("architecture") or ""
    info = {"general.architecture": arch or None, "general.name": f.get("name"),
            "general.parameter_count": f.get("parameters")}
    for key in ("context_length", "embedding_length", "block_count"):
        info[f"{arch}.{key}"] = f.get(key)
    return ModelFile(str(path), size, modified, "gguf", arch, f.get("size_label") or _count(f.get("parameters")),
                     f.get("quant_type") or "", f.get("context_length"),
                     {k: v for k, v in info.items() if v is not None and not k.startswith(".")}, digest)


def _directory(path: Path, modified: float, digest: str) -> ModelFile:
    files = [p for p in path.rglob("*") if p.is_file()]
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    family = str(config.get("model_type") or "") if isinstance(config, dict) else ""
    fmt = "safetensors" if any(p.suffix == ".safetensors" for p in files) else ""
    ctx = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return ModelFile(str(path), sum(p.stat().st_size for p in files), modified, fmt, family,
                     context_length=ctx if isinstance(ctx, int) else None,
                     info={"general.architecture": family} if family else {}, digest=digest)


def _count(n: Any) -> str:
    if not isinstance(n, int) or n <= 0:
        return ""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def details(m: ModelFile) -> JSON:
    return {"parent_model": "", "format": m.format, "family": m.family,
            "families": [m.family] if m.family else None, "parameter_size": m.parameter_size,
            "quantization_level": m.quantization}


def _task_digest(m: ModelFile, task: str) -> str:
    return hashlib.sha256(f"{m.digest}\0task\0{task}".encode()).hexdigest()


def tags(config: Config, paths: Paths) -> JSON:
    """``/api/tags``: every profile, then every task (under its own name, its profile's model)."""
    out = []
    files = {name: model_file(p, paths) for name, p in config.profiles.items()}
    for name, p in config.profiles.items():
        m = files[name]
        out.append(_tag(name, m, m.digest, {"kind": "profile", "engine": p.engine, "model": p.model}))
    for name, t in config.tasks.items():
        m = files[t.profile]
        out.append(_tag(name, m, _task_digest(m, name), {"kind": "task", "profile": t.profile}))
    return {"models": out}


def _tag(name: str, m: ModelFile, digest: str, about: JSON) -> JSON:
    return {"name": name, "model": name, "modified_at": timestamp(m.modified), "size": m.size, "digest": digest,
            "details": details(m), "llmctl": about}


def show(config: Config, paths: Paths, kind: str, name: str) -> JSON:
    """``/api/show`` of a profile or a task: its model's facts, the parameters it sends (a
    task's and ``defaults.sampling``, with Ollama's names) and a task's system prompt."""
    task = config.tasks[name] if kind == "task" else None
    profile = config.profiles[task.profile if task else name]
    m = model_file(profile, paths)
    params = merge(config.defaults.sampling, task)
    lines = [f"{OLLAMA_NAMES.get(k, k)} {json.dumps(s)}" for k, v in params.sampling.items()
             for s in (v if isinstance(v, list) else [v])]
    ctx = context_size(profile)
    if ctx:
        lines.append(f"num_ctx {ctx}")
    modelfile = [f"# {kind} {name}, served by llmctl", f"FROM {m.path or profile.model}"]
    modelfile += [f"PARAMETER {line}" for line in lines]
    if params.system:
        modelfile.append(f'SYSTEM """{params.system}"""')
    caps = ["embedding"] if profile.embeddings else ["completion"]
    if profile.mmproj:
        caps.append("vision")
    out: JSON = {"modelfile": "\n".join(modelfile) + "\n", "parameters": "\n".join(lines), "template": "",
                 "details": details(m), "model_info": m.info, "capabilities": caps,
                 "modified_at": timestamp(m.modified),
                 "llmctl": {"kind": kind, "profile": profile.name, "engine": profile.engine, "model": profile.model}}
    if params.system:
        out["system"] = params.system
    return out


def ps(config: Config, paths: Paths, rows: list[dict[str, Any]], wall: float) -> JSON:
    """``/api/ps``: the running servers (``rows``: the pool's snapshot), each with when its idle
    TTL stops it (``expires_at``) and the GPU memory it is expected to take (its estimate, else
    the model's size; 0 on the CPU backend)."""
    out = []
    for row in rows:
        if row["state"] != "running":
            continue
        p = config.profiles[row["name"]]
        m = model_file(p, paths)
        ttl = row.get("idle_ttl")
        expires = FOREVER if ttl is None else timestamp(wall + max(0.0, ttl - (row.get("idle_s") or 0.0)))
        size = row.get("estimate_bytes") or m.size
        out.append({"name": p.name, "model": p.name, "size": size, "digest": m.digest, "details": details(m),
                    "expires_at": expires, "size_vram": 0 if p.backend == "cpu" else size,
                    "context_length": context_size(p) or m.context_length,
                    "llmctl": {"inflight": row.get("inflight", 0), "idle_ttl": ttl}})
    return {"models": out}
