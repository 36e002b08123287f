"""The GGUF file format, read with the standard library only: the key/value section and the
tensor index of a header, and the parts of a split model.

One reader serves `models show`, `plan`'s estimates (:mod:`llmctl.gpu.estimate`) and the Hub
estimate over HTTP Range requests (:mod:`llmctl.models.remote_gguf`). It never decodes what it
does not need: a 262,144-token vocabulary is stepped over (its strings' lengths read from
1 MiB blocks), not turned into Python strings, and tensor data is never read. The ``gguf``
package would decode every field and tensor entry: 15 s for Gemma 3's vocabulary, where this
takes a few hundredths of a second.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

#: a GGUF file: a path, or a binary file object with ``read`` and ``seek`` (a local file, or
#: :class:`llmctl.models.remote_gguf.RangeFile` over HTTP)
Source = str | Path | BinaryIO | io.RawIOBase

MAGIC = 0x46554747  #: b"GGUF" read as a little-endian uint32
BLOCK = 1024 * 1024
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)

# value types of the key/value section (gguf_type in ggml's gguf.h)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR = {UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i", FLOAT32: "f",
           BOOL: "?", UINT64: "Q", INT64: "q", FLOAT64: "d"}

#: ggml_type -> name (the tensor types; ggml.h)
TENSOR_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
                10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
                17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
                23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
                30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}

#: general.file_type (llama_ftype; llama.h) -> name, without llama.cpp's MOSTLY_ prefix
FILE_TYPES = {0: "ALL_F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
              16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
              22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
              28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
              37: "TQ2_0", 38: "MXFP4_MOE"}


class NotGGUF(ValueError):
    """The file is not GGUF, or its header is cut short."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: str  #: a :data:`TENSOR_TYPES` name, or "type N" for one this table does not know

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Header:
    version: int
    fields: dict[str, Any]  #: the keys asked for
    tensors: list[Tensor]  #: empty unless asked for


class _Cursor:
    """Sequential reads from a file object, served from blocks of :data:`BLOCK` bytes (one
    read call per block, so a remote file costs one Range request per block)."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self.f, self.label = f, label
        self.buf, self.pos = b"", 0
        self.order = "<"

    def take(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            more = self.f.read(max(BLOCK, n))
            if not more:
                raise NotGGUF(f"{self.label}: the header ends early")
            self.buf = self.buf[self.pos:] + more
            self.pos = 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        left = len(self.buf) - self.pos
        if n <= left:
            self.pos += n
            return
        self.f.seek(n - left, 1)
        self.buf, self.pos = b"", 0

    def skip_strings(self, count: int) -> None:
        """Step over ``count`` strings (length-prefixed), a block at a time."""
        fmt = self.order + "Q"
        while count:
            buf, pos, end = self.buf, self.pos, len(self.buf)
            while count and pos + 8 <= end:
                n = struct.unpack_from(fmt, buf, pos)[0]
                if pos + 8 + n > end:
                    break
                pos += 8 + n
                count -= 1
            self.pos = pos
            if count:  # this string crosses the block's end
                self.string(keep=False)
                count -= 1

    def num(self, code: str) -> Any:
        return struct.unpack(self.order + code, self.take(struct.calcsize(code)))[0]

    def string(self, keep: bool = True) -> str | None:
        n = self.num("Q")
        if not keep:
            self.skip(n)
            return None
        return self.take(n).decode("utf-8", errors="replace")


def _value(c: _Cursor, vtype: int, keep: bool) -> Any:
    if vtype == STRING:
        return c.string(keep)
    if vtype == ARRAY:
        itype, count = c.num("I"), c.num("Q")
        if itype in _SCALAR:
            size = struct.calcsize(_SCALAR[itype])
            if not keep:
                c.skip(size * count)
                return None
            return struct.unpack(f"{c.order}{count}{_SCALAR[itype]}", c.take(size * count))
        if itype == STRING:  # the vocabulary: stepped over, never decoded
            c.skip_strings(count)
            return None
        for _ in range(count):  # nested arrays
            _value(c, itype, False)
        return None
    if vtype not in _SCALAR:
        raise NotGGUF(f"{c.label}: unknown value type {vtype} in the header")
    return c.num(_SCALAR[vtype]) if keep else c.skip(struct.calcsize(_SCALAR[vtype]))


def read_header(source: Source, wanted: Callable[[str], bool] = lambda k: True,
                tensors: bool = False) -> Header:
    """The keys of a GGUF header for which ``wanted(key)`` is true (arrays of strings are never
    decoded) and, with ``tensors``, its tensor index. ``source`` is a path or a binary file
    object with ``read`` and ``seek``, read from its current position and not closed."""
    if hasattr(source, "read"):
        f: Any = source
        return _read(_Cursor(f, getattr(f, "name", None) or "the stream"), wanted, tensors)
    with open(source, "rb") as fh:
        return _read(_Cursor(fh, str(source)), wanted, tensors)


def _read(c: _Cursor, wanted: Callable[[str], bool], with_tensors: bool) -> Header:
    head = c.take(24)
    if struct.unpack("<I", head[:4])[0] != MAGIC:
        raise NotGGUF(f"{c.label} is not a GGUF file")
    c.order = "<" if struct.unpack("<I", head[4:8])[0] < 0x10000 else ">"
    version, n_tensors, n_kv = struct.unpack(c.order + "IQQ", head[4:24])
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string() or ""
        vtype = c.num("I")
        keep = wanted(key)
        v = _value(c, vtype, keep)
        if keep:
            fields[key] = v
    out: list[Tensor] = []
    for _ in range(n_tensors if with_tensors else 0):
        name = c.string() or ""
        dims = c.num("I")
        shape = struct.unpack(f"{c.order}{dims}Q", c.take(8 * dims)) if dims else ()
        ttype = c.num("I")
        c.skip(8)  # the data offset
        out.append(Tensor(name, tuple(shape), TENSOR_TYPES.get(ttype, f"type {ttype}")))
    return Header(version, fields, out)


def split_parts(path: Path) -> list[Path]:
    """Every part of a split model (``NAME-00001-of-00003.gguf``...), or just ``path``."""
    m = SPLIT_RE.search(path.name)
    if not m:
        return [path]
    base, count = path.name[: m.start()], int(m.group(2))
    return [path.with_name(f"{base}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


# -- what a memory estimate needs from a header ------------------------------------------
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


def header_fields(source: Source, wanted: Callable[[str], bool]) -> dict[str, Any]:
    """The metadata keys of a GGUF file for which ``wanted(key)`` is true, read in one pass
    over the key/value section by :func:`llmctl.models.gguf.read_header` (the vocabulary is
    stepped over, the tensor index and data are never read). ``source`` is a path or a binary
    file object (a local file, or :class:`llmctl.models.remote_gguf.RangeFile` over HTTP)."""
    return read_header(source, wanted).fields


_LAYOUT_NAMES = ("block_count", "context_length", "embedding_length", "attention.head_count",
                 "attention.head_count_kv", "attention.key_length", "attention.value_length")


def layout_keys(key: str) -> bool:
    """The header keys :func:`layout_from_fields` needs (for :func:`header_fields`)."""
    return key == "general.architecture" or key.split(".", 1)[-1] in _LAYOUT_NAMES


def layout_from_fields(fields: dict[str, Any], size: int) -> ModelLayout:
    """A :class:`ModelLayout` from the header keys :func:`layout_keys` picks and the size of all parts."""
    arch = fields.get("general.architecture")

    def key(name: str) -> Any:
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
    size = sum(p.stat().st_size for p in split_parts(path) if p.exists()) or path.stat().st_size
    return layout_from_fields(header_fields(path, layout_keys), size)
