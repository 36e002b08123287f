"""Facts from a GGUF file's header for `models show`: architecture, parameter count, context
length, quantization. Read with :mod:`llmctl.models.gguf` (the tensor index, never the
vocabulary's strings or the weights); split files are read part by part for the parameter count."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .gguf import FILE_TYPES, read_header, split_parts

_KEYS = ("general.architecture", "general.name", "general.size_label", "general.file_type",
         "general.parameter_count")
_ARCH_KEYS = ("context_length", "embedding_length", "block_count")


def _wanted(key: str) -> bool:
    return key in _KEYS or key.split(".", 1)[-1] in _ARCH_KEYS


def gguf_facts(path: Path) -> dict[str, Any]:
    """Header facts of a GGUF model (the first part, for a split one)."""
    head = read_header(path, _wanted, tensors=True)
    f = head.fields
    arch = f.get("general.architecture")

    def of_arch(name: str) -> Any:
        return f.get(f"{arch}.{name}") if arch else None

    facts: dict[str, Any] = {
        "architecture": arch,
        "name": f.get("general.name"),
        "size_label": f.get("general.size_label"),
        "context_length": of_arch("context_length"),
        "embedding_length": of_arch("embedding_length"),
        "block_count": of_arch("block_count"),
        "gguf_version": head.version,
    }
    file_type = f.get("general.file_type")
    quant = FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    parts = split_parts(path)
    params = f.get("general.parameter_count")
    if params is None:
        params = sum(t.elements for t in head.tensors)
        for extra in parts[1:]:
            if extra.exists():
                params += sum(t.elements for t in read_header(extra, lambda k: False, tensors=True).tensors)
    if quant is None and head.tensors:
        # the most common type among the weight matrices
        types = Counter(t.type for t in head.tensors if len(t.shape) >= 2)
        quant = types.most_common(1)[0][0] if types else None
    facts.update(parameters=int(params), quant_type=quant, tensors=len(head.tensors), split_parts=len(parts))
    return facts


def human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)
