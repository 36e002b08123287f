"""How much GPU memory a profile's server will take: a pure estimate from the GGUF header.

llama-server (GGUF)::

    weights  = file size x offloaded share of the layers (gpu_layers / block_count)
    kv cache = offloaded layers x kv heads x (key length + value length) x ctx x bytes per element

(the K and V halves may differ in width and in type: ``cache-type-k``/``cache-type-v``, f16 = 2
bytes). ``mmproj:`` adds its file size when the layers are offloaded. Not counted: compute
buffers (some hundred MiB, growing with ``ubatch_size``), the smaller cache of sliding-window
layers (Gemma 3: this over-counts), CUDA/Vulkan context. A CPU profile needs nothing.

vLLM: ``gpu_memory_utilization`` (default 0.9) x the memory of one GPU x
``tensor_parallel_size``, when the GPU's memory is known; else unknown (``total`` is None).

:func:`read_layout` reads the header (:mod:`llmctl.models.gguf`, the standard library only);
:func:`estimate` is pure arithmetic on a :class:`ModelLayout`; :func:`estimate_profile` does both.
A catalog alias or ``hf:`` reference not pulled yet is estimated from the Hub (method ``hub``): the
sizes from the repo listing, the header's key/value section over HTTP Range requests
(:mod:`llmctl.models.remote_gguf`), nothing downloaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models.gguf import (
    ModelLayout,
    header_fields,
    layout_from_fields,
    layout_keys,
    read_layout,
)
from ..units import GIB, KIB, MIB, format_size, parse_size

__all__ = ["Estimate", "ModelLayout", "estimate", "estimate_profile", "format_size", "header_fields",
           "layout_from_fields", "layout_keys", "parse_size", "read_layout", "GIB", "KIB", "MIB"]

if TYPE_CHECKING:
    from ..paths import Paths
    from ..profiles.schema import Profile

#: bytes per element of llama.cpp's KV cache types (block types: block bytes / 32 elements)
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                 "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}
VLLM_DEFAULT_UTILIZATION = 0.9
_K_FLAGS = ("cache-type-k", "ctk", "--cache-type-k", "-ctk")
_V_FLAGS = ("cache-type-v", "ctv", "--cache-type-v", "-ctv")


@dataclass
class Estimate:
    """GPU memory one profile is expected to take (bytes)."""

    profile: str
    method: str  #: gguf | hub (a GGUF header read from the Hub, not pulled yet) | vllm | cpu | unknown
    total: int | None  #: None: cannot tell
    weights: int = 0
    kv_cache: int = 0
    extra: int = 0  #: mmproj
    offloaded_layers: int | None = None
    block_count: int | None = None
    ctx: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the header: llmctl.models.gguf ----------------------------------------------------------
# -- the arithmetic ------------------------------------------------------------------------
def _arg(profile: Profile, names: tuple[str, ...]) -> Any:
    for k, v in (profile.args or {}).items():
        if k in names:
            return v
    return None


def _kv_bytes(profile: Profile, names: tuple[str, ...], notes: list[str]) -> float:
    t = _arg(profile, names)
    if t is None:
        return 2.0
    t = str(t).lower()
    if t not in KV_TYPE_BYTES:
        notes.append(f"unknown KV cache type {t!r}: counted as f16")
        return 2.0
    return KV_TYPE_BYTES[t]


def offloaded_layers(profile: Profile, block_count: int) -> int:
    """Layers llama-server puts on the GPU: none on a CPU backend; all when ``gpu_layers`` is
    unset (llama.cpp's default offloads what fits); else ``gpu_layers``, at most all."""
    if profile.backend == "cpu":
        return 0
    if profile.gpu_layers is None or profile.gpu_layers < 0:
        return block_count
    return min(profile.gpu_layers, block_count)


def estimate(profile: Profile, layout: ModelLayout | None = None, *, gpu_total: int | None = None,
             mmproj_size: int | None = None) -> Estimate:
    """GPU memory the profile's server will take. Pure: ``layout`` is the model's header
    (:func:`read_layout`), ``gpu_total`` the memory of one GPU (for vLLM)."""
    name = profile.name
    if profile.engine == "vllm":
        util = profile.gpu_memory_utilization or VLLM_DEFAULT_UTILIZATION
        if gpu_total is None:
            return Estimate(name, "unknown", None, notes=["vLLM: the GPU's memory is not known"])
        total = int(util * gpu_total * (profile.tensor_parallel_size or 1))
        return Estimate(name, "vllm", total, weights=total,
                        notes=[f"gpu_memory_utilization {util} of {format_size(gpu_total)}"])
    if profile.backend == "cpu":
        return Estimate(name, "cpu", 0, offloaded_layers=0, notes=["backend cpu: nothing on a GPU"])
    if layout is None:
        return Estimate(name, "unknown", None, notes=["the model's header could not be read"])
    notes: list[str] = []
    blocks = layout.block_count or 0
    if blocks <= 0:
        notes.append("no block_count in the header: all weights counted, no KV cache")
        return Estimate(name, "gguf", layout.file_size, weights=layout.file_size, notes=notes)
    layers = offloaded_layers(profile, blocks)
    weights = int(layout.file_size * layers / blocks)
    heads = layout.head_count or 0
    head_dim = (layout.embedding_length // heads) if heads and layout.embedding_length else 0
    k_len = layout.key_length or head_dim
    v_len = layout.value_length or head_dim
    kv_heads = layout.head_count_kv if layout.head_count_kv is not None else heads
    if isinstance(kv_heads, tuple):  # per layer: the first `layers` layers are offloaded
        per_layer = list(kv_heads[:layers]) + [kv_heads[-1] if kv_heads else 0] * max(0, layers - len(kv_heads))
        kv_head_layers = sum(per_layer)
    else:
        kv_head_layers = layers * (kv_heads or 0)
    ctx = profile.ctx_size or layout.context_length or 0
    if not profile.ctx_size:
        notes.append(f"ctx_size unset: the model's context ({ctx}) is used, as llama-server does")
    k_bytes = _kv_bytes(profile, _K_FLAGS, notes)
    v_bytes = _kv_bytes(profile, _V_FLAGS, notes)
    kv = int(kv_head_layers * ctx * (k_len * k_bytes + v_len * v_bytes))
    extra = mmproj_size if (mmproj_size and layers) else 0
    return Estimate(name, "gguf", weights + kv + extra, weights=weights, kv_cache=kv, extra=extra,
                    offloaded_layers=layers, block_count=blocks, ctx=ctx, notes=notes)


def estimate_profile(profile: Profile, paths: Paths | None = None, *, gpu_total: int | None = None,
                     hub: bool = False) -> Estimate:
    """Resolve the profile's model, read its header and :func:`estimate`. A catalog alias or an
    ``hf:`` reference that is not pulled yet is estimated from the Hub instead (method ``hub``:
    the repo listing's sizes and the header read over HTTP Range requests, see
    :mod:`llmctl.models.remote_gguf`). Never raises for a model that cannot be read (nor for
    the network): the estimate is then ``unknown``, with the reason in its notes. The Hub is
    asked only with ``hub=True`` (`llmctl plan`): `up` and the gateway never wait on the network
    for an estimate."""
    if profile.engine == "vllm" or profile.backend == "cpu":
        return estimate(profile, None, gpu_total=gpu_total)
    from ..models.resolve import resolve_model

    method, hub_note = "gguf", None
    try:
        layout = read_layout(resolve_model(profile, paths))
    except Exception as exc:  # noqa: BLE001 - missing model, not a GGUF file, odd header
        layout, why = None, _message(exc)
        if hub and _from_hub(exc, profile, paths):
            try:
                from ..models.remote_gguf import hub_layout

                remote = hub_layout(profile.model, paths)
                layout, method, hub_note = remote.layout, "hub", remote.note
            except Exception as hub_exc:  # noqa: BLE001 - the network, the Hub, the header
                why = f"{why}; estimating from the Hub failed: {_message(hub_exc)}"
        if layout is None:
            est = estimate(profile, None)
            est.notes.append(why)
            return est
    mmproj_size = None
    if profile.mmproj:
        p = Path(profile.mmproj).expanduser()
        p = p if p.is_absolute() else profile.base_dir / p
        try:
            mmproj_size = p.stat().st_size
        except OSError:
            pass
    est = estimate(profile, layout, gpu_total=gpu_total, mmproj_size=mmproj_size)
    if hub_note:
        est.method = method
        est.notes.insert(0, hub_note)
    return est


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def _from_hub(exc: BaseException, profile: Profile, paths: Paths | None) -> bool:
    """The model is missing only because it was not pulled: the Hub can tell its header."""
    from ..errors import ModelMissing
    from ..models.resolve import pullable

    return isinstance(exc, ModelMissing) and pullable(profile.model, paths)
