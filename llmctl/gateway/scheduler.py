"""The judgement behind the gateway's evictions, pure: what stopping an idle server is expected
to cost, how recent demand is measured, and how long a server is kept once loaded.

**The cost of an eviction** is the reload time it is expected to bring, per second: the seconds
the server took to start last time (measured by the pool at each start, kept per profile) times
how often it has been asked for lately (an exponentially decayed request rate, window
:data:`RATE_WINDOW`). The cheapest idle servers go first; equal costs (nothing measured yet, or
within a factor of :data:`COST_STEP`) fall back to least recently used, today's rule. After the
victims are chosen greedily, any that turn out not to be needed are kept (:func:`prune`).

**Minimum residency.** A server loaded less than ``min_resident`` seconds ago, and in demand
(asked for more than once lately: a single request is no reason to hold others back), is not
stopped to make room: the request that needs the room waits (and is woken when the time is up). Meanwhile
requests for that server are still admitted, even after a claim on it: each swap serves the
batch of requests that gathered for it, and two models cannot evict each other on every request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from statistics import median
from typing import TYPE_CHECKING, Any

from .states import GatewayState

if TYPE_CHECKING:
    from .policy import Server

RATE_WINDOW = 300.0  #: seconds over which the request rate decays by a factor e
DEFAULT_MIN_RESIDENT = 3.0  #: seconds a loaded server stays before it may be evicted (the default)
IN_DEMAND = 1.5  #: requests within RATE_WINDOW (decayed) that make a server in demand
COST_STEP = 2.0  #: costs within this factor of each other count as equal
UNKNOWN_LOAD = 1.0  #: seconds assumed for a reload when no start was ever timed


def decayed(rate: float, at: float, now: float) -> float:
    """``rate`` (requests per second as of ``at``) as of ``now``."""
    return rate * math.exp(-max(0.0, now - at) / RATE_WINDOW)


def bumped(rate: float, at: float, now: float) -> float:
    """The rate as of ``now`` after one more request at ``now``."""
    return decayed(rate, at, now) + 1.0 / RATE_WINDOW


def learned_load(old: float, seconds: float) -> float:
    """The expected start time after one more measured start (weighted to the recent ones)."""
    return seconds if old <= 0 else 0.5 * old + 0.5 * seconds


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
    """Expected reload seconds per second brought by stopping ``srv`` now."""
    return (srv.load_s or fallback) * srv.rate


def cost_class(srv: Server, fallback: float) -> int:
    """:func:`cost` in classes a factor of :data:`COST_STEP` apart: costs closer than that are
    equal (measurement noise must not overturn least recently used)."""
    c = cost(srv, fallback)
    return -(1 << 30) if c <= 0 else math.floor(math.log(c, COST_STEP))


def prune(chosen: Sequence[Server], used: int, need: int, budget: int) -> list[Server]:
    """``chosen`` (victims in eviction order, ``used`` the bytes live after stopping them) less
    those not needed after all: the costliest are kept first when dropping one still fits."""
    out = list(chosen)
    for s in reversed(chosen):
        if s.state is GatewayState.RUNNING and used + s.estimate + need <= budget:
            out.remove(s)
            used += s.estimate
    return out


# -- per-GPU placement (``defaults.vram_budget`` as a map) ------------------------------------
def order_key(ticket: int, now: float, fallback: float) -> Callable[[Server], tuple[Any, ...]]:
    """The eviction order: servers already stopping, then idle ones past ``min_resident``,
    cheapest to reload first, least recently used among equals; busy ones last."""
    return lambda s: (s.state is not GatewayState.STOPPING, not evictable(s, ticket), resident(s, now),
                      cost_class(s, fallback), s.last_used)


def evictable(srv: Server, ticket: int) -> bool:
    """``srv`` may be stopped now for the request holding ``ticket``: running, nothing in
    flight, no older request waiting for it, and no older claim on it."""
    return (srv.state is GatewayState.RUNNING and srv.inflight == 0 and not any(t < ticket for t in srv.waiting)
            and not (srv.claims and min(srv.claims) < ticket))


def share(srv: Server, gpu: str) -> int:
    """Bytes ``srv`` takes on ``gpu`` (a split model: an even share on each of its GPUs)."""
    return srv.estimate // len(srv.devices) if gpu in srv.devices else 0


def on_gpus(caps: Mapping[str, int], live: Sequence[Server], srv: Server, ticket: int,
            now: float) -> tuple[list[Server], tuple[str, ...]] | None:
    """Where ``srv`` goes and what it stops there, under per-GPU budgets ``caps`` (``live``: the
    servers holding memory, less those already being swapped out). A pinned profile stays on its
    ``devices``; an unpinned one goes on the GPU where it stops nothing it cannot stop now, then
    the least reload cost, then the fewest servers, then on one GPU rather than split evenly
    over all (llama.cpp's layer split), then the best fit. None: it fits nowhere."""
    fallback = default_load(live)
    key = order_key(ticket, now, fallback)
    gpus = tuple(sorted(caps, key=_gpu_order))
    options: list[tuple[str, ...]] = [tuple(srv.devices)] if srv.pinned and srv.devices else [(g,) for g in gpus]
    if len(options) > 1:
        options.append(gpus)  # split evenly over them all: only where no single GPU does better
    best: tuple[tuple[Any, ...], list[Server], tuple[str, ...]] | None = None
    for devs in options:
        picked = _fit_on(caps, live, devs, srv.estimate, key)
        if picked is None:
            continue
        chosen, left = picked
        blocked = sum(1 for v in chosen if not evictable(v, ticket) or resident(v, now))
        score = (blocked, sum(cost(v, fallback) for v in chosen), len(chosen), len(devs), left)
        if best is None or score < best[0]:
            best = (score, chosen, devs)
    return None if best is None else (best[1], best[2])


def _fit_on(caps: Mapping[str, int], live: Sequence[Server], devs: tuple[str, ...], need: int,
            key: Callable[[Server], tuple[Any, ...]]) -> tuple[list[Server], int] | None:
    """The servers to stop so ``need`` bytes fit on ``devs`` (split evenly), and the bytes then
    left on them; None when they cannot hold it even empty. A GPU without a budget holds back
    nothing."""
    devs = tuple(g for g in devs if g in caps)
    if not devs:
        return [], 0
    each = -(-need // len(devs))
    if any(each > caps[g] for g in devs):
        return None
    used = {g: sum(share(s, g) for s in live) for g in devs}
    chosen: list[Server] = []
    for s in sorted((s for s in live if set(s.devices) & set(devs)), key=key):
        if all(used[g] + each <= caps[g] for g in devs):
            break
        chosen.append(s)
        for g in devs:
            used[g] -= share(s, g)
    for s in list(reversed(chosen)):  # keep the costliest victims not needed after all
        if s.state is GatewayState.RUNNING and all(used[g] + share(s, g) + each <= caps[g] for g in devs):
            chosen.remove(s)
            for g in devs:
                used[g] += share(s, g)
    return chosen, sum(caps[g] - used[g] - each for g in devs)


def _gpu_order(gpu: str) -> tuple[int, str]:
    return (int(gpu), "") if gpu.isdigit() else (1 << 30, gpu)
