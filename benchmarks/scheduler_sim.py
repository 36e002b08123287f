"""The gateway's scheduler against groups and LRU, replayed on request traces with a fake clock.

    python benchmarks/scheduler_sim.py [--seeds 5] [traces/*.json ...]
    python benchmarks/scheduler_sim.py --make-traces   # rewrite benchmarks/traces/ (seeded)

Each trace is replayed against the REAL policy code (llmctl.gateway.policy.decide, through
llmctl.gateway.simulate) on two machines, 2 GPUs of 24 GB and 1 GPU of 80 GB, under three
policies side by side: (a) one exclusive group per GPU (llama-swap's default), (b) LRU under
one budget for all GPUs (llmctl before issue 17; Ollama-like), (c) the scheduler (per-GPU
placement, reload cost, min_resident, collation). Printed: swaps (servers stopped to make room),
total load time, p50/p95 wait from arrival to admission, each summed/pooled over --seeds runs
(the seed draws each load's jitter), and (c)'s change against (b).

Load times: a model's mean load is the measured fixed start cost of llama-server on the H200
(1.6 s for `llmctl up`, docs/gpu-run.md) plus its size read at 2 GB/s (page cache to GPU; an
assumption, stated here), each load drawn within +-20 % of it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llmctl.gateway.simulate import GB, POLICIES, Result, simulate, trace_from  # noqa: E402

HERE = Path(__file__).resolve().parent / "traces"
MACHINES = {"2x24GB": {"0": 24 * GB, "1": 24 * GB}, "1x80GB": {"0": 80 * GB}}
FIXED_S, READ_GBPS = 1.6, 2.0


def model(gb: float) -> dict[str, float]:
    return {"gb": gb, "load_s": round(FIXED_S + gb / READ_GBPS, 2)}


def bursty_chat(rnd: random.Random) -> dict:
    """Bursts of chat on one model (a user typing: a request every 2-6 s for a minute or two,
    then quiet), a summary model in the background every ~25 s, and a short-lived rerank."""
    reqs, t = [], 0.0
    while t < 1800:
        end = t + rnd.uniform(60, 150)
        while t < end:
            reqs.append([round(t, 2), "chat", round(rnd.uniform(2, 8), 2)])
            t += rnd.uniform(2, 6)
        t += rnd.uniform(30, 120)
    reqs += [[round(x, 2), "summary", round(rnd.uniform(3, 10), 2)] for x in _poisson(rnd, 25, 1800)]
    reqs += [[round(x, 2), "rerank", 0.3] for x in _poisson(rnd, 40, 1800)]
    return {"models": {"chat": model(20), "summary": model(14), "rerank": model(9)}, "requests": reqs}


def round_robin(rnd: random.Random) -> dict:
    """Six models of 9-11 GB asked for in turn, a request every ~2 s."""
    names = [f"m{i}" for i in range(6)]
    reqs = [[round(i * 2.0 + rnd.uniform(0, 0.5), 2), names[i % 6], round(rnd.uniform(1, 3), 2)] for i in range(600)]
    return {"models": {n: model(9 + i % 3) for i, n in enumerate(names)}, "requests": reqs}


def primary_specialists(rnd: random.Random) -> dict:
    """A primary chat model asked for all along (a request every ~12 s), and six specialised
    models (code, vision, math, translation, summaries, embeddings) each asked for now and then
    (every ~2 min) in short bursts of 1-4 requests."""
    reqs = [[round(x, 2), "primary", round(rnd.uniform(2, 6), 2)] for x in _poisson(rnd, 12, 1800)]
    spec = {"code": 14, "vision": 12, "math": 12, "translate": 10, "summarize": 10, "embed": 3}
    for name in spec:
        for x in _poisson(rnd, 120, 1800):
            reqs += [[round(x + k * rnd.uniform(1, 4), 2), name, round(rnd.uniform(1, 5), 2)]
                     for k in range(rnd.randint(1, 4))]
    return {"models": {"primary": model(20), **{n: model(gb) for n, gb in spec.items()}}, "requests": reqs}


def _poisson(rnd: random.Random, mean_gap: float, until: float) -> list[float]:
    out, t = [], rnd.expovariate(1 / mean_gap)
    while t < until:
        out.append(t)
        t += rnd.expovariate(1 / mean_gap)
    return out


MAKERS = {"bursty_chat": bursty_chat, "round_robin": round_robin, "primary_specialists": primary_specialists}


def make_traces() -> None:
    HERE.mkdir(exist_ok=True)
    for i, (name, make) in enumerate(MAKERS.items()):
        data = make(random.Random(17 + i))
        data["requests"].sort()
        (HERE / f"{name}.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
        print(f"wrote {HERE / name}.json ({len(data['requests'])} requests)")


def pooled(trace, gpus, policy: str, seeds: int) -> Result:
    out = Result()
    for seed in range(1, seeds + 1):
        r = simulate(trace, gpus, policy, seed=seed)
        out.swaps, out.loads, out.load_time = out.swaps + r.swaps, out.loads + r.loads, out.load_time + r.load_time
        out.waits += r.waits
        out.refused += r.refused
    return out


def change(new: float, old: float) -> str:
    return "=" if new == old else ("n/a" if not old else f"{(new - old) / old * 100:+.0f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="*", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--make-traces", action="store_true")
    a = ap.parse_args()
    if a.make_traces:
        make_traces()
        return
    files = a.traces or sorted(HERE.glob("*.json"))
    print(f"{'trace':20} {'machine':7} {'policy':10} {'swaps':>6} {'load s':>8} {'p50 s':>7} {'p95 s':>7}"
          f" {'served':>7}   vs (b): swaps, p95")
    for f in files:
        trace = trace_from(json.loads(f.read_text()), f.stem)
        for machine, gpus in MACHINES.items():
            rows = {p: pooled(trace, gpus, p, a.seeds) for p in POLICIES}
            for label, p in zip("abcd", POLICIES):
                r = rows[p]
                vs = ""
                if p in ("scheduler", "oracle"):
                    vs = f"   {change(r.swaps, rows['lru'].swaps)}, {change(r.p(95), rows['lru'].p(95))}"
                print(f"{trace.name:20} {machine:7} ({label}) {p:6} {r.swaps:6d} {r.load_time:8.0f} "
                      f"{r.p(50):7.2f} {r.p(95):7.2f} {len(r.waits):7d}{vs}")
    print(f"(summed over {a.seeds} seeds; swaps = servers stopped to make room)")


if __name__ == "__main__":
    main()
