"""`llmctl bench`: prompt-processing and generation speed per profile, time to first token,
server mode against cli mode for the same prompts.

The speeds come from the engine's own timings where it reports them: llama-server's `timings`
field (``source: "server"``), the one-shot tool's perf lines in cli mode (``source: "tool"``).
An engine that reports none (vLLM) gets figures measured by the client from the streamed answer
(``source: "client"``, see :func:`client_speeds`)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .profiles.schema import Config

SENTENCE = ("Local language models answer questions, summarize documents and route requests "
            "between a light model and a heavy one. ")
MODES = ("server", "cli")


def prompt_of(words: int) -> str:
    base = SENTENCE.split()
    text = " ".join(base[i % len(base)] for i in range(words))
    return f"Summarize the following text in one sentence.\n\n{text}"


def prompts_for(runs: int, words: int, tag: str | None = None) -> list[str]:
    """One prompt per run, each with its own first line so that a server's prompt cache cannot
    skip the work of a previous run; the same list serves both modes (same prompts, same token
    counts)."""
    tag = tag or str(time.time_ns())
    body = prompt_of(words)
    return [f"Request {i + 1} of {tag}.\n{body}" for i in range(runs)]


@dataclass
class BenchRow:
    profile: str
    mode: str  #: server | cli
    runs: int
    prompt_tokens: int | None  #: the whole prompt, chat template included
    gen_tokens: int | None
    prompt_tps: float | None  #: prompt processing, tokens/s (median)
    gen_tps: float | None  #: generation, tokens/s (median)
    ttft_ms: float | None  #: time to first token as the client sees it (median)
    total_ms: float  #: whole request (median), model load included in cli mode
    source: str | None = None  #: where the speeds come from: server | tool | client | mixed
    error: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = field(default=None, repr=False)  #: the error's exit code; not in to_dict
    hint: str | None = field(default=None, repr=False)  #: what to do about the error; not in to_dict

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("exit_code")
        d.pop("hint")
        return d


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def client_speeds(t0: float, chunk_times: list[float], prompt_tokens: int | None,
                  completion_tokens: int | None) -> dict[str, Any]:
    """Speeds measured by the client, for an engine that reports no timings of its own.

    ``t0``: when the request was sent; ``chunk_times``: when each streamed piece of answer
    arrived (same clock); ``completion_tokens``: from the stream's ``usage`` where it has one,
    else each piece counts as one token.

    - time to first token = first piece − ``t0``
    - prompt tokens/s = prompt tokens / time to first token (so it includes the network and the
      first token's decoding: a lower bound)
    - generation tokens/s = tokens after the first / (last piece − first piece): n tokens
      arriving over that span are n − 1 intervals of generation

    A figure that cannot be computed (no piece, one token only, no prompt count) is None.
    """
    out: dict[str, Any] = {"ttft_ms": None, "prompt_tps": None, "gen_tps": None,
                 "gen_tokens": completion_tokens if completion_tokens is not None else len(chunk_times)}
    if not chunk_times:
        return out
    ttft = chunk_times[0] - t0
    out["ttft_ms"] = round(ttft * 1000, 1)
    if prompt_tokens and ttft > 0:
        out["prompt_tps"] = round(prompt_tokens / ttft, 2)
    span = chunk_times[-1] - chunk_times[0]
    n = out["gen_tokens"]
    if n and n > 1 and span > 0:
        out["gen_tps"] = round((n - 1) / span, 2)
    return out


def sample_of(mode: str, timings: dict[str, Any], *, tokens_in: int | None, tokens_out: int | None, t0: float,
              chunk_times: list[float], t_end: float, finish_reason: str | None = None) -> dict[str, Any]:
    """One request's figures: the engine's own timings where present, else the client's."""
    reporter = "server" if mode == "server" else "tool"
    measured = client_speeds(t0, chunk_times, tokens_in or timings.get("prompt_n"),
                             tokens_out if tokens_out is not None else timings.get("predicted_n"))
    prompt_tps, gen_tps = timings.get("prompt_per_second"), timings.get("predicted_per_second")
    sources = {reporter if prompt_tps is not None else "client", reporter if gen_tps is not None else "client"}
    if prompt_tps is None:
        prompt_tps = measured["prompt_tps"]
    if gen_tps is None:
        gen_tps = measured["gen_tps"]
    if tokens_out is None:
        tokens_out = timings.get("predicted_n") or measured["gen_tokens"]
    return {"prompt_tokens": tokens_in or timings.get("prompt_n"),
            "cached_tokens": timings.get("cache_n"),
            "gen_tokens": tokens_out,
            "prompt_tps": round(prompt_tps, 2) if prompt_tps is not None else None,
            "gen_tps": round(gen_tps, 2) if gen_tps is not None else None,
            "source": sources.pop() if len(sources) == 1 else "mixed",
            "ttft_ms": measured["ttft_ms"],
            "total_ms": round((t_end - t0) * 1000, 1),
            "finish_reason": finish_reason}


def _source(samples: list[dict[str, Any]]) -> str | None:
    found = {s["source"] for s in samples}
    return found.pop() if len(found) == 1 else ("mixed" if found else None)


def bench(config: Config, names: list[str], *, modes: tuple[str, ...] = MODES, runs: int = 3,
          prompt_words: int = 200, max_tokens: int = 64, timeout: float = 300.0,
          skip_impossible: bool = False, note: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Measure each profile in each mode with the same prompts; a mode that cannot run (server
    not up, vLLM in cli mode) gives a row with ``error`` (and ``exit_code``) instead of numbers.
    ``skip_impossible``: cli mode for a profile whose engine has no one-shot tool gives a row
    with a note but no exit code (the default `both` asks for it only where it exists)."""
    from .errors import LlmctlError, describe
    from .inference.run import run_task

    note = note or (lambda s: None)
    prompts = prompts_for(runs, prompt_words)
    rows = []
    for name in names:
        prof = config.profile(name)
        for mode in modes:
            samples: list[dict[str, Any]] = []
            error: str | None = None
            code: int | None = None
            hint: str | None = None
            if mode == "cli" and prof.engine != "llama-server" and skip_impossible:
                rows.append(BenchRow(profile=name, mode=mode, runs=0, prompt_tokens=None, gen_tokens=None,
                                     prompt_tps=None, gen_tps=None, ttft_ms=None, total_ms=0.0,
                                     error=f"skipped: no cli mode for engine {prof.engine}"))
                continue
            for i, prompt in enumerate(prompts):
                chunks: list[float] = []
                t0 = time.monotonic()
                try:
                    res = run_task(prompt, profile=name, mode=mode, config=config, timeout=timeout,
                                   overrides={"max_tokens": max_tokens, "temperature": 0.0, "seed": 42},
                                   on_text=_stamper(chunks))
                except LlmctlError as exc:
                    exit_code, _, hint = describe(exc)
                    error, code = exc.message, int(exit_code)
                    break
                samples.append(sample_of(mode, res.timings, tokens_in=res.tokens_in, tokens_out=res.tokens_out,
                                         t0=t0, chunk_times=chunks, t_end=time.monotonic(),
                                         finish_reason=res.finish_reason))
                note(f"{name} {mode} run {i + 1}/{runs}: {_brief(samples[-1])}")
            rows.append(BenchRow(
                profile=name, mode=mode, runs=len(samples),
                prompt_tokens=samples[0]["prompt_tokens"] if samples else None,
                gen_tokens=samples[0]["gen_tokens"] if samples else None,
                prompt_tps=_median([s["prompt_tps"] for s in samples]),
                gen_tps=_median([s["gen_tps"] for s in samples]),
                ttft_ms=_median([s["ttft_ms"] for s in samples]),
                total_ms=_median([s["total_ms"] for s in samples]) or 0.0,
                source=_source(samples), error=error, samples=samples, exit_code=code, hint=hint))
    return rows


def _stamper(stamps: list[float]) -> Callable[[str], None]:
    """``on_text`` for one request: notes when each piece of the answer arrived."""
    return lambda text: stamps.append(time.monotonic())


def _brief(sample: dict[str, Any]) -> str:
    """One progress line: what a person watching wants from a sample."""
    def num(key: str, fmt: str) -> str:
        v = sample.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "?"

    return (f"prompt {sample.get('prompt_tokens')} tok at {num('prompt_tps', '.0f')} tok/s, "
            f"{sample.get('gen_tokens')} tok at {num('gen_tps', '.1f')} tok/s, first token {num('ttft_ms', '.0f')} ms "
            f"({sample.get('source')})")
