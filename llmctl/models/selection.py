"""Which files of a Hub repo a reference means: one quant's GGUF file (all parts of a split
file), one named file, or the whole repo; errors list what the repo has instead."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelNotFound, QuantNotFound
from .hub import RemoteFile, Snapshot
from .refs import SPLIT_RE, ModelRef, is_model_gguf, quant_of, split_base


@dataclass
class Selection:
    files: list[RemoteFile]
    quant: str | None
    main: str  #: the main file (relative), or "." for the directory (whole repos)


def quant_sets(files: list[RemoteFile]) -> dict[str, list[list[RemoteFile]]]:
    """QUANT -> the GGUF model files of that quant, each as the list of its parts."""
    sets: dict[str, dict[str, list[RemoteFile]]] = {}
    for f in files:
        q = quant_of(f.path)
        if q and is_model_gguf(f.path):
            sets.setdefault(q, {}).setdefault(split_base(f.path), []).append(f)
    return {q: [sorted(parts, key=lambda f: f.path) for _, parts in sorted(bases.items())]
            for q, bases in sets.items()}


def _parts_of(files: list[RemoteFile], path: str) -> list[RemoteFile]:
    if not SPLIT_RE.search(path):
        return [f for f in files if f.path == path]
    base = split_base(path)
    return sorted((f for f in files if SPLIT_RE.search(f.path) and split_base(f.path) == base),
                  key=lambda f: f.path)


def select(ref: ModelRef, snap: Snapshot) -> Selection:
    """The files ``ref`` means in the repo snapshot; errors list what there is instead."""
    files = snap.files
    if ref.file:
        chosen = _parts_of(files, ref.file)
        if not chosen:
            ggufs = [f.path for f in files if f.path.endswith(".gguf")]
            there = ", ".join(ggufs[:15]) + (" ..." if len(ggufs) > 15 else "") if ggufs else "no GGUF files"
            raise ModelNotFound(f"repo {snap.repo} has no file {ref.file!r} at {snap.revision[:12]} ({there})",
                                repo=snap.repo)
        return Selection(chosen, quant_of(ref.file), chosen[0].path)
    if ref.quant:
        sets = quant_sets(files)
        found = sets.get(ref.quant.upper())
        if not found:
            have = sorted(sets)
            base = ref.alias if ref.kind == "alias" else f"hf:{ref.repo}"
            if have:
                listing = ", ".join(have)
                msg = (f"{snap.repo} has no {ref.quant} GGUF file; its quants: {listing} "
                       f"(e.g. `llmctl pull {base}:{have[0]}`)")
            else:
                msg = f"{snap.repo} has no GGUF files at all (pull the whole repo with `llmctl pull hf:{snap.repo}`)"
            raise QuantNotFound(msg, repo=snap.repo, quants=have)
        # several files of one quant (rare): the shortest name is the plain model
        chosen = min(found, key=lambda parts: (len(parts[0].path), parts[0].path))
        return Selection(chosen, ref.quant.upper(), chosen[0].path)
    if not files:
        raise ModelNotFound(f"repo {snap.repo} has no files at {snap.revision[:12]}", repo=snap.repo)
    sets = quant_sets(files)
    if len(sets) == 1 and len(next(iter(sets.values()))) == 1:
        [(q, [parts])] = sets.items()
        return Selection(list(files), q, parts[0].path)
    return Selection(list(files), None, ".")
