"""Estimates that learn: the GPU memory a running server was seen to take (``status`` reads it
from nvidia-smi / rocm-smi), kept per profile and model in ``learned-vram.json`` beside the
state directory, and used instead of the GGUF estimate next time (`plan` shows both).

The key holds what changes the memory (model, context, offloaded layers, slots, batches,
backend, vLLM's share and length), so a changed profile is estimated afresh, not read from a
stale measurement. The largest figure seen is kept (a server's memory grows as its buffers
fill; an estimate must cover the peak)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..paths import Paths
from ..profiles.schema import Profile

FILE = "learned-vram.json"


def key(p: Profile) -> str:
    """What the measurement of ``p`` holds for."""
    parts = (p.model, p.backend, p.ctx_size, p.gpu_layers, p.parallel, p.batch_size, p.ubatch_size,
             p.mmproj, p.gpu_memory_utilization, p.max_model_len, p.tensor_parallel_size)
    return f"{p.name}|" + "|".join("" if v is None else str(v) for v in parts)


def _file(paths: Paths) -> Path:
    return paths.state.parent / FILE


def _read(paths: Paths) -> dict[str, int]:
    try:
        data = json.loads(_file(paths).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)} \
        if isinstance(data, dict) else {}


def lookup(paths: Paths, p: Profile) -> int | None:
    """Bytes ``p``'s server was seen to take, or None."""
    return _read(paths).get(key(p))


def record(paths: Paths, p: Profile, size: int) -> bool:
    """Keep ``size`` bytes as ``p``'s measurement when larger than the one kept; True when the
    file changed. Written whole and renamed (a reader never sees half a file)."""
    data = _read(paths)
    k = key(p)
    if size <= 0 or data.get(k, 0) >= size:
        return False
    data[k] = size
    target = _file(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".learned-", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, target)
    return True


def learn(paths: Paths, profiles: dict[str, Profile], seen: list[tuple[str, str, int | None]]) -> None:
    """From ``status``: (name, state, vram MiB) of each server; running ones are kept."""
    for name, state, mib in seen:
        p = profiles.get(name)
        if p is not None and state == "running" and mib and p.backend != "cpu" and not p.remote:
            try:
                record(paths, p, mib * 1024 * 1024)
            except OSError:
                pass  # a read-only home: nothing learned, nothing broken
