"""A replay of request traces against the gateway's real decisions (:func:`~llmctl.gateway.policy.decide`)
with a fake clock: the core of ``benchmarks/scheduler_sim.py``, importable so it is tested.

The simulation carries decisions out as the pool does (claims, starts that stop their victims
first, re-deciding every waiting request after each change, a wake-up at a Wait's ``until``);
what the pool measures (start time per profile; when each request arrives, for the urgency;
the request rate and the length of a request, counted as each request ends) is measured here
on the fake clock. A start takes the model's load time with a seeded jitter; a stop
:data:`STOP_S`. A request refused as busy waits for a slot (a client retrying).

Four policies, the same trace and machine:

- ``groups``: one exclusive group per GPU (models dealt out over the GPUs by size), no budget,
  nothing measured: llama-swap's default.
- ``lru``: one budget for all GPUs together, least recently used idle server first, nothing
  measured, no ``min_resident``: llmctl before issue 17, and Ollama-like.
- ``scheduler``: per-GPU budgets, placement, reload cost by urgency, ``min_resident`` and
  collation: the gateway's rule (llmctl.gateway.scheduler).
- ``oracle``: the same, except that each server's urgency is read from the trace's future
  (1 / the seconds until its next request) and every reload is costed alike: Belady's rule,
  the idle server asked for furthest in the future goes first. Only the simulation can do
  this (it is the view it hands decide(); the gateway's code never sees the future): a
  reference for what foresight would buy, not a policy.
"""

from __future__ import annotations

import bisect
import heapq
import random
from dataclasses import dataclass, field, replace
from statistics import quantiles
from typing import Any

from .policy import Admit, Group, Reject, Request, Server, Start, Wait, World, decide
from .scheduler import DEFAULT_MIN_RESIDENT, SOON, Demand, bumped, decayed, learned_load
from .states import GatewayState

S = GatewayState
GB = 1 << 30
STOP_S = 0.5  #: seconds a stop takes
POLICIES = ("groups", "lru", "scheduler", "oracle")


@dataclass(frozen=True)
class Model:
    name: str
    size: int  #: bytes of GPU memory
    load_s: float  #: mean seconds to load


@dataclass(frozen=True)
class Trace:
    name: str
    models: dict[str, Model]
    requests: list[tuple[float, str, float]]  #: (arrival second, model, service seconds)


@dataclass
class Result:
    swaps: int = 0  #: servers stopped to make room
    loads: int = 0
    load_time: float = 0.0
    waits: list[float] = field(default_factory=list)  #: seconds from arrival to admission
    refused: int = 0

    def p(self, q: int) -> float:
        """The q-th percentile wait."""
        if len(self.waits) < 2:
            return self.waits[0] if self.waits else 0.0
        return quantiles(self.waits, n=100, method="inclusive")[q - 1]


@dataclass
class _Pending:
    ticket: int
    model: str
    arrival: float
    service: float
    attempt: int = 0
    claimed: set[str] = field(default_factory=set)


def trace_from(data: dict[str, Any], name: str = "trace") -> Trace:
    """A trace from its JSON form: ``{"models": {name: {"gb": .., "load_s": ..}}, "requests":
    [[t, model, service_s], ...]}``."""
    models = {n: Model(n, int(m["gb"] * GB), float(m["load_s"])) for n, m in data["models"].items()}
    reqs = sorted((float(t), str(m), float(s)) for t, m, s in data["requests"])
    return Trace(name, models, reqs)


def deal(models: dict[str, Model], gpus: dict[str, int]) -> dict[str, str]:
    """Models dealt out over the GPUs, biggest first, each to the GPU with the least assigned."""
    load = {g: 0 for g in gpus}
    out = {}
    for m in sorted(models.values(), key=lambda m: -m.size):
        g = min((g for g in gpus if m.size <= gpus[g]), key=lambda g: (load[g], g), default=None)
        if g is None:
            raise ValueError(f"{m.name} fits on no GPU")
        out[m.name], load[g] = g, load[g] + m.size
    return out


def simulate(trace: Trace, gpus: dict[str, int], policy: str, *, seed: int = 1, limit: int = 4) -> Result:
    """Replay ``trace`` on GPUs of ``gpus`` bytes under ``policy`` (one of :data:`POLICIES`)."""
    return _Sim(trace, gpus, policy, random.Random(seed), limit).run()


class _Sim:
    def __init__(self, trace: Trace, gpus: dict[str, int], policy: str, rnd: random.Random, limit: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}: one of {', '.join(POLICIES)}")
        self.trace, self.policy, self.rnd, self.now = trace, policy, rnd, 0.0
        self.result = Result()
        self.groups: dict[str, Group] = {}
        self.gpus: dict[str, int] = {}
        self.budget: int | None = None
        homes = deal(trace.models, gpus)
        if policy == "groups":
            self.groups = {f"gpu{g}": Group(tuple(m for m, h in homes.items() if h == g)) for g in gpus}
        elif policy == "lru":
            self.budget = sum(gpus.values())
        else:
            self.gpus, self.budget = dict(gpus), sum(gpus.values())
        resident = DEFAULT_MIN_RESIDENT if policy in ("scheduler", "oracle") else 0.0
        self.servers = {m.name: Server(m.name, limit=limit, estimate=m.size, min_resident=resident,
                                       group=f"gpu{homes[m.name]}" if policy == "groups" else None)
                        for m in trace.models.values()}
        self.rate_at: dict[str, float] = {n: 0.0 for n in self.servers}
        self.demand: dict[str, Demand] = {n: Demand() for n in self.servers}
        self.future: dict[str, list[float]] = {n: [] for n in self.servers}  #: the oracle's foresight
        for t, m, _ in trace.requests:
            self.future[m].append(t)
        self.events: list[tuple[float, int, str, str, float]] = []
        self.seq = 0
        self.pending: list[_Pending] = []
        self.wakes: set[float] = set()

    def at(self, t: float, kind: str, name: str = "", since: float = 0.0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, name, since))

    def run(self) -> Result:
        for i, (t, _, _) in enumerate(self.trace.requests):
            self.at(t, "arrive", f"{i}")
        while self.events:
            t, _, kind, name, since = heapq.heappop(self.events)
            self.now = t
            self.event(kind, name, since)
            self.settle()
        return self.result

    def event(self, kind: str, name: str, since: float) -> None:
        srv = self.servers.get(name)
        if kind == "arrive":
            _, model, service = self.trace.requests[int(name)]
            self.pending.append(_Pending(int(name) + 1, model, self.now, service))
            self.demand[model] = self.demand[model].asked(self.now)
            self.set(model, waiting=self.servers[model].waiting | {int(name) + 1})
        elif kind == "up" and srv is not None:
            self.set(name, state=S.RUNNING, running_since=self.now, last_used=self.now)
        elif kind == "down" and srv is not None:
            self.set(name, state=S.STOPPED, running_since=None)
        elif kind == "done" and srv is not None:
            rate = bumped(srv.rate, self.rate_at[name], self.now)
            self.rate_at[name] = self.now
            self.set(name, inflight=srv.inflight - 1, last_used=self.now, rate=rate,
                     serve_s=learned_load(srv.serve_s, self.now - since))

    def set(self, name: str, **changes: Any) -> None:
        self.servers[name] = replace(self.servers[name], **changes)

    def world(self) -> World:
        views = {n: self.view(s) for n, s in self.servers.items()}
        return World(views, self.groups, self.budget, self.now, gpus=self.gpus)

    def view(self, s: Server) -> Server:
        if self.policy in ("groups", "lru"):
            return replace(s, rate=0.0, load_s=0.0, serve_s=0.0, urgency=0.0)  # nothing measured: LRU
        rate = decayed(s.rate, self.rate_at[s.name], self.now)
        if self.policy == "oracle":  # scheduler.cost() = 1 / the seconds to its next request
            return replace(s, rate=rate, urgency=self.foresight(s.name) / (s.load_s or 1.0))
        return replace(s, rate=rate, urgency=self.demand[s.name].urgency(self.now))

    def foresight(self, name: str) -> float:
        """1 / the seconds until the next request for ``name`` (at least scheduler.SOON), read
        from the trace; 0 when none is left."""
        times = self.future[name]
        i = bisect.bisect_right(times, self.now)
        return 0.0 if i == len(times) else 1.0 / max(times[i] - self.now, SOON)

    def settle(self) -> None:
        """Re-decide every waiting request, oldest first, until nothing changes (the pool's
        wake-up after each change)."""
        changed = True
        while changed:
            changed, held = False, set[str]()
            for p in sorted(self.pending, key=lambda p: p.ticket):
                if p.model in held:
                    continue  # an older request for the same model is held: so is this one
                if self.decide(p):
                    changed, held = True, set()
                else:
                    held.add(p.model)

    def decide(self, p: _Pending) -> bool:
        d = decide(self.world(), Request(p.model, p.ticket, attempt=p.attempt))
        if isinstance(d, Wait):
            for other in d.claim:
                if other not in p.claimed:
                    p.claimed.add(other)
                    self.set(other, claims=self.servers[other].claims | {p.ticket})
            if d.until is not None and d.until not in self.wakes:
                self.wakes.add(d.until)
                self.at(d.until, "wake")
            return False
        if isinstance(d, Reject) and d.kind == "busy":
            return False  # waits for a slot
        self.drop_claims(p)
        if isinstance(d, Start):
            self.start(p.model, d)
            p.attempt = 1
            return True
        self.pending.remove(p)
        srv = self.servers[p.model]
        self.set(p.model, waiting=srv.waiting - {p.ticket})
        if isinstance(d, Admit):
            self.set(p.model, inflight=srv.inflight + 1, last_used=self.now)
            self.result.waits.append(self.now - p.arrival)
            self.at(self.now + p.service, "done", p.model, self.now)
        else:
            self.result.refused += 1
        return True

    def drop_claims(self, p: _Pending) -> None:
        for other in p.claimed:
            self.set(other, claims=self.servers[other].claims - {p.ticket})
        p.claimed.clear()

    def start(self, name: str, d: Start) -> None:
        for victim, _ in d.victims:
            self.set(victim, state=S.STOPPING, running_since=None)
            self.at(self.now + STOP_S, "down", victim)
            self.result.swaps += 1
        model = self.trace.models[name]
        load = model.load_s * self.rnd.uniform(0.8, 1.2)
        self.result.loads += 1
        self.result.load_time += load
        srv = self.servers[name]
        self.set(name, state=S.STARTING, load_s=learned_load(srv.load_s, load),
                 devices=d.devices or srv.devices)
        self.at(self.now + (STOP_S if d.victims else 0.0) + load, "up", name)
