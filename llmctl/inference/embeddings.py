"""Embeddings through `/v1/embeddings` of a running server whose profile has ``embeddings: true``
(llama-server) or any vLLM profile (vLLM decides from the model)::

    from llmctl.inference import embed
    vectors = embed(["some text", "more text"], profile="embedder").vectors
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EngineError, NoServerAvailable, RemoteUnreachable, UsageError
from ..profiles.schema import Config, Profile


@dataclass
class EmbedResult:
    profile: str
    model: str
    url: str
    vectors: list[list[float]]
    tokens_in: int | None = None
    timings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dimensions"] = len(self.vectors[0]) if self.vectors else 0
        d["count"] = len(self.vectors)
        return d


def _can_embed(p: Profile) -> bool:
    return p.engine == "vllm" or p.embeddings


def pick_profile(config: Config, profile: str | None) -> Profile:
    """The named profile (it must be able to embed), else the first running profile with
    ``embeddings: true``."""
    from .router import server_states

    if profile is not None:
        prof = config.profile(profile)
        if not _can_embed(prof) and not prof.remote:  # a remote server named here: it decides
            raise UsageError(f"profile {prof.name!r} does not serve embeddings: set `embeddings: true` in it "
                             f"({prof.where()}), then `llmctl restart {prof.name}`")
        names = [prof.name]
    else:
        names = [n for n, p in config.profiles.items() if _can_embed(p)]
        if not names:
            raise UsageError("no profile serves embeddings: add `embeddings: true` to one (llama-server), "
                             "or name one with --profile")
    from ..supervise.states import READY

    why: dict[str, str] = {}
    states, _ = server_states(config, names, why)
    for n in names:
        if states[n] in READY:
            return config.profiles[n]
    desc = ", ".join(f"{n}: {states[n].value}" + (f" ({why[n]})" if n in why else "") for n in names)
    first = config.profiles[names[0]]
    if first.remote:
        raise RemoteUnreachable(f"no running server for embeddings ({desc})", profile=first.name, url=first.url)
    raise NoServerAvailable(f"no running server for embeddings ({desc})", profile=names[0])


def embed(texts: list[str], *, profile: str | None = None, config: Config | None = None,
          files: list[str] | None = None, timeout: float | None = 300.0) -> EmbedResult:
    """One vector per text, in order."""
    from .client import post_json
    from .request import embeddings_request
    from .run import _served_model, load

    if not texts:
        raise UsageError("nothing to embed: give TEXT arguments or pipe text on stdin")
    t0 = time.monotonic()
    deadline = t0 + timeout if timeout else None
    config = load(config, files)
    prof = pick_profile(config, profile)
    req = embeddings_request(prof, texts, model=_served_model(prof, deadline))
    try:
        data = post_json(req, name=prof.name, deadline=deadline)
    except EngineError as exc:
        if "pooling" in exc.message.lower():
            exc.detail = ("this model needs a pooling type for OpenAI-style embeddings: "
                          "add `args: {pooling: mean}` to the profile, then `llmctl restart " + prof.name + "`")
        raise
    items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in items]
    if len(vectors) != len(texts) or not all(isinstance(v, list) for v in vectors):
        raise EngineError(f"{prof.name}: expected {len(texts)} embeddings, got {len(vectors)}", profile=prof.name)
    usage = data.get("usage") or {}
    return EmbedResult(profile=prof.name, model=prof.model, url=prof.url, vectors=vectors,
                       tokens_in=usage.get("prompt_tokens"),
                       timings={"total_ms": round((time.monotonic() - t0) * 1000, 1)})
