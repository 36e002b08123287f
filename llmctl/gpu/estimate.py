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

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

if TYPE_CHECKING:
    from ..paths import Paths
    from ..profiles.schema import Profile

KIB, MIB, GIB = 1024, 1024**2, 1024**3
#: bytes per element of llama.cpp's KV cache types (block types: block bytes / 32 elements)
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                 "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}
VLLM_DEFAULT_UTILIZATION = 0.9
_K_FLAGS = ("cache-type-k", "ctk", "--cache-type-k", "-ctk")
_V_FLAGS = ("cache-type-v", "ctv", "--cache-type-v", "-ctv")
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": KIB, "mib": MIB, "gib": GIB, "tib": 1024**4}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class ModelLayout:
    """What the estimate needs from a GGUF header."""

    file_size: int  #: bytes on disk (all parts of a split model)
    architecture: str | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | tuple[int, ...] | None = None  #: per layer when the model varies it
    embedding_length: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    context_length: int | None = None  #: the model's training context (llama-server's -c 0)


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


def parse_size(text: str | int | float) -> int:
    """``22GiB``, ``20000MiB``, ``8GB``, ``1.5 GiB``, ``123456`` (bytes) -> bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 22GiB, 20000MiB, 8GB)")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


# -- the header ----------------------------------------------------------------------------
def _split_parts(path: Path) -> list[Path]:
    from ..models.gguf import split_parts

    return split_parts(path)


def header_fields(source: str | Path | BinaryIO, wanted: Callable[[str], bool]) -> dict[str, Any]:
    """The metadata keys of a GGUF file for which ``wanted(key)`` is true, read in one pass
    over the key/value section by :func:`llmctl.models.gguf.read_header` (the vocabulary is
    stepped over, the tensor index and data are never read). ``source`` is a path or a binary
    file object (a local file, or :class:`llmctl.models.remote_gguf.RangeFile` over HTTP)."""
    from ..models.gguf import read_header

    return read_header(source, wanted).fields


_LAYOUT_NAMES = ("block_count", "context_length", "embedding_length", "attention.head_count",
                 "attention.head_count_kv", "attention.key_length", "attention.value_length")


def layout_keys(key: str) -> bool:
    """The header keys :func:`layout_from_fields` needs (for :func:`header_fields`)."""
    return key == "general.architecture" or key.split(".", 1)[-1] in _LAYOUT_NAMES


def layout_from_fields(fields: dict[str, Any], size: int) -> ModelLayout:
    """A :class:`ModelLayout` from the header keys :func:`layout_keys` picks and the size of all parts."""
    arch = fields.get("general.architecture")

    def key(name: str):
        return fields.get(f"{arch}.{name}") if arch else None

    kv = key("attention.head_count_kv")
    if isinstance(kv, tuple):
        kv = tuple(int(x) for x in kv) if len(set(kv)) > 1 else (int(kv[0]) if kv else None)
    heads = key("attention.head_count")
    if isinstance(heads, tuple):  # per layer: the widest
        heads = max(heads) if heads else None
    return ModelLayout(file_size=size, architecture=arch, block_count=key("block_count"), head_count=heads,
                       head_count_kv=kv, embedding_length=key("embedding_length"),
                       key_length=key("attention.key_length"), value_length=key("attention.value_length"),
                       context_length=key("context_length"))


def read_layout(path: str | Path) -> ModelLayout:
    """The header facts of a GGUF file (the first part of a split model; sizes of all parts)."""
    path = Path(path)
    size = sum(p.stat().st_size for p in _split_parts(path) if p.exists()) or path.stat().st_size
    return layout_from_fields(header_fields(path, layout_keys), size)


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
