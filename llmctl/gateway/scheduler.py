"""The judgement behind the gateway's evictions, pure: how soon each server is expected to be
asked for again, what stopping it is expected to cost, which servers to stop to make room (and
where to place a start under per-GPU budgets), and how long a server is kept once loaded.
docs/scheduler.md tells the whole rule, with the simulator's numbers.

**How soon.** Per profile the gateway keeps when its last request arrived and the gaps between
its last :data:`GAPS` requests (:class:`Demand`). Its *urgency* is the mean, over the gaps seen
that are longer than its quiet time so far, of 1 / the seconds left until the next request (at
least :data:`SOON`), with one more gap ending as long again from now as it has been quiet (at
least :data:`PRIOR`). Cyclic demand: the server asked for last is expected last (least recently
used gets this exactly wrong); bursts: high inside one, low once it is over; steady (Poisson)
demand: about its rate; asked for once: 1 / :data:`PRIOR`, then 1 / its quiet time.

**The cost of stopping a server** is the reload time it is expected to bring, per second: the
seconds its start took (measured by the pool at each start) times its urgency. The servers to
stop are the set that makes room at the least total cost (:func:`cover`; a set costing up to
:data:`COST_STEP` times the least is preferred where it waits for fewer servers, then where it
stops fewer), so a single server goes rather than two where it costs not much more. A server busy
with a request, or just loaded (``min_resident``), is part of that choice when it will be free
before the start could finish anyway (:func:`worth_waiting`: its requests' measured length, or
what is left of its ``min_resident``); the request then waits for it instead of stopping a
server about to be asked for. With nothing measured, the least recently used idle server goes
first, as before the scheduler.

**Minimum residency.** A server loaded less than ``min_resident`` seconds ago, and in demand
(asked for more than once lately, by its decayed request rate: a single request is no reason to
hold others back), is not stopped to make room: the request that needs the room waits (and is
woken when the time is up). Meanwhile requests for that server are still admitted, even after
a claim on it: each swap serves the batch of requests that gathered for it, and two models
cannot evict each other on every request.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import TYPE_CHECKING, Any

from .states import GatewayState

if TYPE_CHECKING:
    from .policy import Server

RATE_WINDOW = 300.0  #: seconds over which the request rate decays by a factor e
DEFAULT_MIN_RESIDENT = 3.0  #: seconds a loaded server stays before it may be evicted (the default)
IN_DEMAND = 1.5  #: requests within RATE_WINDOW (decayed) that make a server in demand
COST_STEP = 2.0  #: costs within this factor of each other count as equal (see cover, cost_class)
MIN_LOAD = 0.1  #: seconds: shorter measured starts count as this (their differences are the clock's noise)
UNKNOWN_LOAD = 1.0  #: seconds assumed for a reload when no start was ever timed
GAPS = 32  #: gaps between requests kept per profile
SOON = 1.0  #: seconds: a request expected sooner counts as this soon
PRIOR = 60.0  #: seconds: a server asked for once, or quiet past its every gap, is expected back no sooner


def decayed(rate: float, at: float, now: float) -> float:
    """``rate`` (requests per second as of ``at``) as of ``now``."""
    return rate * math.exp(-max(0.0, now - at) / RATE_WINDOW)


def bumped(rate: float, at: float, now: float) -> float:
    """The rate as of ``now`` after one more request at ``now``."""
    return decayed(rate, at, now) + 1.0 / RATE_WINDOW


def learned_load(old: float, seconds: float) -> float:
    """The expected start time after one more measured start (weighted to the recent ones)."""
    return seconds if old <= 0 else 0.5 * old + 0.5 * seconds


@dataclass(frozen=True)
class Demand:
    """When a profile was asked for: its last request's arrival and the gaps between its last
    :data:`GAPS` requests, oldest first (kept by the pool per profile; the simulator keeps the
    same on its fake clock)."""

    last: float | None = None  #: when its last request arrived (None: never asked for)
    gaps: tuple[float, ...] = ()

    def asked(self, now: float) -> Demand:
        """After one more request arriving at ``now``."""
        if self.last is None:
            return Demand(now)
        return Demand(now, (*self.gaps, max(0.0, now - self.last))[-GAPS:])

    def urgency(self, now: float) -> float:
        """How soon its next request is expected, as of ``now`` (per second; 0: never asked
        for): the mean of 1 / the seconds left (at least :data:`SOON`) over the gaps seen that
        are longer than its quiet time so far, and over one more gap that ends as long again
        from now as it has been quiet, or :data:`PRIOR` seconds from now, whichever is later
        (all there is for a server asked for once, or quiet past all its gaps)."""
        if self.last is None:
            return 0.0
        quiet = max(0.0, now - self.last)
        ahead = [g - quiet for g in self.gaps if g > quiet] + [max(quiet, PRIOR)]
        return sum(1.0 / max(r, SOON) for r in ahead) / len(ahead)


def resident_until(srv: Server) -> float | None:
    """When ``srv`` may be evicted (None: it is not protected by ``min_resident``)."""
    if srv.running_since is None or srv.min_resident <= 0:
        return None
    return srv.running_since + srv.min_resident


def resident(srv: Server, now: float) -> bool:
    """``srv`` is kept: loaded less than its ``min_resident`` ago, and in demand (asked for
    about :data:`IN_DEMAND` times or more lately, by its decayed rate)."""
    until = resident_until(srv)
    return until is not None and now < until and srv.rate * RATE_WINDOW >= IN_DEMAND


def default_load(servers: Iterable[Server]) -> float:
    """The reload time assumed for a server never timed: the median of the timed ones."""
    known = [s.load_s for s in servers if s.load_s > 0]
    return median(known) if known else UNKNOWN_LOAD


def cost(srv: Server, fallback: float) -> float:
    """Expected reload seconds per second brought by stopping ``srv`` now: its measured start
    time (``fallback`` where never timed) times its urgency."""
    return (max(srv.load_s, MIN_LOAD) if srv.load_s > 0 else fallback) * srv.urgency


def cost_class(srv: Server, fallback: float, per_byte: bool = False) -> int:
    """:func:`cost` (``per_byte``: per GiB it frees) in :func:`cost_band` classes."""
    return cost_band(cost(srv, fallback) / (max(srv.estimate, 1) / (1 << 30) if per_byte else 1.0))


# -- choosing the victims ---------------------------------------------------------------------
ALL = ""  #: the one "GPU" of a single budget for all GPUs together
MAX_COVER = 10  #: idle servers on the GPUs beyond which victims are chosen greedily


def order_key(ticket: int, now: float, fallback: float) -> Callable[[Server], tuple[Any, ...]]:
    """The greedy eviction order (used where nothing is measured, and past :data:`MAX_COVER`
    servers): servers already stopping, then idle ones past ``min_resident``, cheapest to reload
    per byte freed first, least recently used among equals; busy ones last."""
    return lambda s: (s.state is not GatewayState.STOPPING, not evictable(s, ticket), resident(s, now),
                      cost_class(s, fallback, per_byte=True), s.last_used)


def evictable(srv: Server, ticket: int) -> bool:
    """``srv`` may be stopped now for the request holding ``ticket``: running, nothing in
    flight, no older request waiting for it, and no older claim on it."""
    return (srv.state is GatewayState.RUNNING and srv.inflight == 0 and not any(t < ticket for t in srv.waiting)
            and not (srv.claims and min(srv.claims) < ticket))


def share(srv: Server, gpu: str) -> int:
    """Bytes ``srv`` takes on ``gpu`` (a split model: an even share on each of its GPUs; every
    server is on :data:`ALL`)."""
    if gpu == ALL:
        return srv.estimate
    return srv.estimate // len(srv.devices) if gpu in srv.devices else 0


def on_gpus(caps: Mapping[str, int], live: Sequence[Server], srv: Server, ticket: int,
            now: float) -> tuple[list[Server], tuple[str, ...]] | None:
    """Where ``srv`` goes and what it stops there, under per-GPU budgets ``caps`` (``live``: the
    servers holding memory, less those already being swapped out). A pinned profile stays on its
    ``devices``; an unpinned one goes on the GPU where it waits for nothing not worth waiting
    for (:func:`worth_waiting`), then the least reload cost, then where it waits for nothing,
    then the fewest servers, then on one GPU rather than split evenly over all (llama.cpp's
    layer split), then the best fit. None: it fits nowhere."""
    fallback = default_load(live)
    patience = srv.load_s or fallback
    gpus = tuple(sorted(caps, key=_gpu_order))
    options: list[tuple[str, ...]] = [tuple(srv.devices)] if srv.pinned and srv.devices else [(g,) for g in gpus]
    if len(options) > 1:
        options.append(gpus)  # split evenly over them all: only where no single GPU does better
    best: tuple[tuple[Any, ...], list[Server], tuple[str, ...]] | None = None
    for devs in options:
        picked = fit_on(caps, live, devs, srv.estimate, ticket, now, fallback, patience)
        if picked is None:
            continue
        chosen, left = picked
        stuck = sum(1 for v in chosen if blocked(v, ticket, now) and not worth_waiting(v, ticket, now, patience))
        score = (stuck, cost_band(sum(cost(v, fallback) for v in chosen)), sum(blocked(v, ticket, now) for v in chosen),
                 len(chosen), len(devs), left)
        if best is None or score < best[0]:
            best = (score, chosen, devs)
    return None if best is None else (best[1], best[2])


def fit_on(caps: Mapping[str, int], live: Sequence[Server], devs: tuple[str, ...], need: int, ticket: int,
           now: float, fallback: float, patience: float = 0.0) -> tuple[list[Server], int] | None:
    """The servers to stop so ``need`` bytes fit on ``devs`` (split evenly), and the bytes then
    left on them; None when they cannot hold it even empty. A GPU without a budget holds back
    nothing. Servers already stopping count first; then, where anything was measured, the set
    that frees the room at the least reload cost (:func:`cover`) among the servers that can
    be stopped now or are worth waiting for (``patience``: the seconds the start is expected to
    take); else, or where they are not enough, the greedy order (:func:`order_key`)."""
    devs = tuple(g for g in devs if g in caps)
    if not devs:
        return [], 0
    each = -(-need // len(devs))
    if any(each > caps[g] for g in devs):
        return None
    used = {g: sum(share(s, g) for s in live) for g in devs}

    def fits(gone: Iterable[Server]) -> bool:
        freed = {g: sum(share(s, g) for s in gone) for g in devs}
        return all(used[g] - freed[g] + each <= caps[g] for g in devs)

    key = order_key(ticket, now, fallback)
    on = sorted((s for s in live if any(share(s, g) for g in devs)), key=key)
    chosen: list[Server] = []
    for s in (s for s in on if s.state is GatewayState.STOPPING):
        if fits(chosen):
            break
        chosen.append(s)
    if not fits(chosen):
        free = [s for s in on if not blocked(s, ticket, now) or worth_waiting(s, ticket, now, patience)]
        best = cover(free, lambda more: fits(chosen + more), fallback, ticket, now) if len(free) <= MAX_COVER else None
        if best is not None:
            chosen += best
        else:
            for s in on:
                if fits(chosen):
                    break
                if s not in chosen:
                    chosen.append(s)
            chosen = _kept(chosen, fits)
    gone = {g: sum(share(s, g) for s in chosen) for g in devs}
    return chosen, sum(caps[g] - used[g] + gone[g] - each for g in devs)


def blocked(srv: Server, ticket: int, now: float) -> bool:
    """``srv`` cannot be stopped now for the request holding ``ticket``: not :func:`evictable`,
    or kept by ``min_resident``."""
    return not evictable(srv, ticket) or resident(srv, now)


def worth_waiting(srv: Server, ticket: int, now: float, patience: float) -> bool:
    """``srv`` cannot be stopped now but may be waited for: running and owed nothing (no older
    request waiting for it, no older claim on it), and expected free again within ``patience``
    seconds: its requests in flight take their measured length (unknown: not waited for), its
    ``min_resident`` what is left of it."""
    if srv.state is not GatewayState.RUNNING or any(t < ticket for t in srv.waiting) or \
            (srv.claims and min(srv.claims) < ticket):
        return False
    if srv.inflight and not 0 < srv.serve_s <= patience:
        return False
    until = resident_until(srv)
    return not resident(srv, now) or until is None or until - now <= patience


def cover(free: Sequence[Server], fits: Callable[[list[Server]], bool], fallback: float, ticket: int,
          now: float) -> list[Server] | None:
    """The set of ``free`` servers whose stopping makes room (``fits``) at the least reload cost.
    Among the sets costing up to :data:`COST_STEP` times the least, the one with the fewest
    servers that cannot be stopped now goes, then the one with the fewest servers (one rather
    than two), then the cheapest, then the least recently used. None: nothing measured (least
    recently used decides, as before the scheduler), or not even all of them make room."""
    if not any(cost(s, fallback) > 0 for s in free) or not fits(list(free)):
        return None
    found = [(sum(cost(s, fallback) for s in c), list(c))
             for k in range(1, len(free) + 1) for c in itertools.combinations(free, k) if fits(list(c))]
    least = min(t for t, _ in found)
    return min(((t, c) for t, c in found if t <= least * COST_STEP),
               key=lambda tc: (sum(blocked(v, ticket, now) for v in tc[1]), len(tc[1]), tc[0],
                               max(v.last_used for v in tc[1])))[1]


def _kept(chosen: list[Server], fits: Callable[[list[Server]], bool]) -> list[Server]:
    """``chosen`` less the victims not needed after all: the last chosen (the costliest) are
    kept first."""
    out = list(chosen)
    for s in reversed(chosen):
        if s.state is GatewayState.RUNNING and fits([v for v in out if v is not s]):
            out.remove(s)
    return out


def cost_band(c: float) -> int:
    """A cost's class: costs a factor of :data:`COST_STEP` apart are a class apart (closer
    ones are equal: measurement noise must not overturn least recently used)."""
    return -(1 << 30) if c <= 0 else math.floor(math.log(c, COST_STEP))


def _gpu_order(gpu: str) -> tuple[int, str]:
    return (int(gpu), "") if gpu.isdigit() else (1 << 30, gpu)
