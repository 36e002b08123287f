"""Model references: what a user may write after `llmctl pull` or in a profile's ``model:``.

- ``qwen2.5-7b`` / ``qwen2.5-7b:Q5_K_M``: a catalog alias, with the alias's default quant or
  the one given;
- ``hf:ORG/REPO:QUANT``: the GGUF file(s) of that quant in a Hub repo;
- ``hf:ORG/REPO/PATH/FILE.gguf``: one file (a split GGUF brings all its parts);
- ``hf:ORG/REPO``: the whole repo (safetensors models for vLLM);
- a path (``./m.gguf``, ``/models/x.gguf``, ``~/m.gguf``) or the name of a model in the store.

Each pulled reference has one *store name* (the directory under the model store):
``ALIAS-QUANT`` for aliases (``qwen2.5-7b-q4_k_m``), ``ORG--REPO-QUANT`` for ``hf:`` quant
references, ``ORG--REPO--FILE`` for one file, ``ORG--REPO`` for a whole repo (all lowercase).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .catalog import Catalog

RefKind = Literal["alias", "hf", "path", "name"]

#: ``-00001-of-00003.gguf``: the parts of a split GGUF file
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)
#: a quantization token in a file name: Q4_K_M, IQ4_XS, Q8_0, UD-Q4_K_XL, F16, BF16...
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?I?Q\d+(?:_[A-Za-z0-9]+)*|BF16|FP16|F16|FP32|F32)(?![A-Za-z0-9])", re.I)
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_QUANT_ARG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def looks_like_path(ref: str) -> bool:
    """A local file or directory rather than a reference or a store name."""
    if ref.startswith("hf:"):
        return False
    return "/" in ref or ref.endswith(".gguf") or ref.startswith(("~", "."))


def quant_of(path: str) -> str | None:
    """The quantization a GGUF file name declares (upper case), if any."""
    if not path.lower().endswith(".gguf"):
        return None
    stem = SPLIT_RE.sub("", path)
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    found = _QUANT_RE.findall(stem)
    return found[-1].upper() if found else None


def is_model_gguf(path: str) -> bool:
    """A GGUF file holding model weights (not a multimodal projector or an imatrix)."""
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(".gguf") and not name.startswith(("mmproj", "imatrix"))


def split_base(path: str) -> str:
    """The name shared by all parts of a split GGUF file (the path itself if not split)."""
    return SPLIT_RE.sub(".gguf", path)


def slug(text: str) -> str:
    """Lower-case store-name form of any text (a valid model name: see store.check_store_name)."""
    s = re.sub(r"^[^a-z0-9]+|[-.]+$", "", re.sub(r"[^a-z0-9_.-]+", "-", text.lower()))
    return s or "model"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference. ``quant`` is the asked (or the alias's default) quantization."""

    text: str
    kind: RefKind
    repo: str | None = None
    quant: str | None = None
    file: str | None = None
    alias: str | None = None

    @property
    def canonical(self) -> str:
        """The reference spelled out in full (the alias's default quant made explicit)."""
        if self.kind == "alias":
            return f"{self.alias}:{self.quant}" if self.quant else str(self.alias)
        if self.kind == "hf":
            if self.file:
                return f"hf:{self.repo}/{self.file}"
            return f"hf:{self.repo}:{self.quant}" if self.quant else f"hf:{self.repo}"
        return self.text

    @property
    def store_name(self) -> str:
        if self.kind == "alias":
            return slug(f"{self.alias}-{self.quant}" if self.quant else str(self.alias))
        if self.kind == "hf":
            base = str(self.repo).replace("/", "--")
            if self.file:
                stem = split_base(self.file).rsplit("/", 1)[-1]
                stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
                return slug(f"{base}--{stem}")
            return slug(f"{base}-{self.quant}" if self.quant else base)
        return self.text


def parse_ref(text: str, catalog: Catalog | None = None) -> ModelRef:
    """Parse a reference. Aliases are looked up in ``catalog``; anything that is neither a
    path, an ``hf:`` reference nor a known alias comes back as kind ``name`` (a store name)."""
    from ..errors import UsageError

    text = text.strip()
    if text.startswith("hf:"):
        body = text[3:].strip("/")
        quant = None
        parts = body.split("/")
        if len(parts) == 2 and ":" in parts[1]:
            parts[1], quant = parts[1].split(":", 1)
        repo = "/".join(parts[:2])
        file = "/".join(parts[2:]) or None
        if not _REPO_RE.match(repo) or (quant is not None and not _QUANT_ARG_RE.match(quant)) \
                or (file is not None and (":" in file or ".." in file.split("/"))):
            raise UsageError(f"{text!r} is not a model reference: use hf:ORG/REPO, hf:ORG/REPO:QUANT "
                             "or hf:ORG/REPO/FILE.gguf")
        return ModelRef(text, "hf", repo=repo, quant=quant.upper() if quant else None, file=file)
    if looks_like_path(text):
        return ModelRef(text, "path")
    alias, _, quant = text.partition(":")
    entry = catalog.get(alias) if catalog is not None else None
    if entry is not None:
        if quant and not _QUANT_ARG_RE.match(quant):
            raise UsageError(f"{text!r}: {quant!r} is not a quantization name (like Q4_K_M)")
        q = quant.upper() if quant else entry.quant
        return ModelRef(text, "alias", repo=entry.repo, quant=q, alias=entry.alias)
    return ModelRef(text, "name")
