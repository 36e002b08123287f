"""`llmctl bench`: prompt-processing and generation speed per profile, time to first token,
server mode against cli mode, from the engines' own timings where they report them."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .profiles.schema import Config

SENTENCE = ("Local language models answer questions, summarize documents and route requests "
            "between a light model and a heavy one. ")


def prompt_of(words: int) -> str:
    base = SENTENCE.split()
    text = " ".join(base[i % len(base)] for i in range(words))
    return f"Summarize the following text in one sentence.\n\n{text}"


@dataclass
class BenchRow:
    profile: str
    mode: str  #: server | cli
    runs: int
    prompt_tokens: int | None
    gen_tokens: int | None
    prompt_tps: float | None  #: prompt processing, tokens/s (median)
    gen_tps: float | None  #: generation, tokens/s (median)
    ttft_ms: float | None  #: time to first token as the client sees it (median)
    total_ms: float  #: whole request (median), model load included in cli mode
    error: str | None = None
    samples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def bench(config: Config, names: list[str], *, modes: tuple[str, ...] = ("server", "cli"), runs: int = 3,
          prompt_words: int = 200, max_tokens: int = 64, timeout: float = 300.0,
          note: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Measure each profile in each mode; a mode that cannot run (server not up, vLLM in cli
    mode) gives a row with ``error`` instead of numbers."""
    from .errors import LlmctlError
    from .inference.run import run_task

    note = note or (lambda s: None)
    prompt = prompt_of(prompt_words)
    rows = []
    for name in names:
        config.profile(name)
        for mode in modes:
            samples, error = [], None
            for i in range(runs):
                first: list[float] = []
                t0 = time.monotonic()
                try:
                    # a fresh first line per request: the server's prompt cache must not skip the work
                    fresh = f"Request {mode}-{i}-{time.time_ns()}.\n{prompt}"
                    res = run_task(fresh, profile=name, mode=mode, config=config, timeout=timeout,
                                   overrides={"max_tokens": max_tokens, "temperature": 0.0, "seed": 42},
                                   on_text=lambda s: first.append(time.monotonic()) if not first else None)
                except LlmctlError as exc:
                    error = exc.message
                    break
                t = res.timings
                samples.append({"prompt_tokens": t.get("prompt_n") or res.tokens_in,
                                "gen_tokens": t.get("predicted_n") or res.tokens_out,
                                "prompt_tps": t.get("prompt_per_second"), "gen_tps": t.get("predicted_per_second"),
                                "ttft_ms": round((first[0] - t0) * 1000, 1) if first else None,
                                "total_ms": round((time.monotonic() - t0) * 1000, 1)})
                note(f"{name} {mode} run {i + 1}/{runs}: {samples[-1]}")
            rows.append(BenchRow(
                profile=name, mode=mode, runs=len(samples),
                prompt_tokens=samples[0]["prompt_tokens"] if samples else None,
                gen_tokens=samples[0]["gen_tokens"] if samples else None,
                prompt_tps=_median([s["prompt_tps"] for s in samples]),
                gen_tps=_median([s["gen_tps"] for s in samples]),
                ttft_ms=_median([s["ttft_ms"] for s in samples]),
                total_ms=_median([s["total_ms"] for s in samples]) or 0.0,
                error=error, samples=samples))
    return rows
