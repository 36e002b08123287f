"""Facts from a GGUF file's header (via the ``gguf`` package): architecture, parameter count,
context length, quantization. Split files are read part by part for the parameter count."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .refs import SPLIT_RE


def _value(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:  # noqa: BLE001 - an odd field is just not shown
        return None


def _parts(path: Path) -> list[Path]:
    m = SPLIT_RE.search(path.name)
    if not m:
        return [path]
    count = int(m.group(2))
    base = path.name[: m.start()]
    return [path.with_name(f"{base}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def gguf_facts(path: Path) -> dict:
    """Header facts of a GGUF model (the first part, for a split one)."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))
    arch = _value(reader, "general.architecture")
    facts: dict = {
        "architecture": arch,
        "name": _value(reader, "general.name"),
        "size_label": _value(reader, "general.size_label"),
        "context_length": _value(reader, f"{arch}.context_length") if arch else None,
        "embedding_length": _value(reader, f"{arch}.embedding_length") if arch else None,
        "block_count": _value(reader, f"{arch}.block_count") if arch else None,
        "gguf_version": _value(reader, "GGUF.version"),
    }
    file_type = _value(reader, "general.file_type")
    quant = None
    if isinstance(file_type, int):
        try:
            quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = None
    tensors = list(reader.tensors)
    params = _value(reader, "general.parameter_count")
    parts = _parts(path)
    if params is None:
        params = sum(int(t.n_elements) for t in tensors)
        for extra in parts[1:]:
            if extra.exists():
                params += sum(int(t.n_elements) for t in GGUFReader(str(extra)).tensors)
    if quant is None and tensors:
        # the most common type among the weight matrices
        types = Counter(t.tensor_type.name for t in tensors if len(t.shape) >= 2)
        quant = types.most_common(1)[0][0] if types else None
    facts.update(parameters=int(params), quant_type=quant, tensors=len(tensors),
                 split_parts=len(parts))
    return facts


def human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)
