"""``llmctl plan --together``, pure: which sets of profiles fit at once on each GPU, and what a
request for each profile would evict, asked of the gateway's own policy
(:func:`~llmctl.gateway.policy.placement`).

The starting point for "would evict" is the state after asking for every profile once, in the
order given, each start placed and evicting as the gateway would (all idle, the later ones
more recently used)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from .policy import Request, Server, Start, World, decide, placement
from .states import GatewayState

S = GatewayState
ALL = "all"  #: the one "GPU" of a single budget for all GPUs together
MAX_SETS = 12  #: profiles beyond which the sets are not enumerated


@dataclass
class Together:
    sets: dict[str, list[tuple[str, ...]]]  #: GPU -> the largest sets of profiles that fit on it at once
    loaded: dict[str, tuple[str, ...]]  #: profile -> its GPUs, after asking for each once in order
    evicts: dict[str, tuple[str, ...] | None]  #: profile -> what a request for it stops (None: fits nowhere)

    def to_dict(self) -> dict[str, object]:
        return {"sets": {g: [list(s) for s in v] for g, v in self.sets.items()},
                "loaded": {n: list(d) for n, d in self.loaded.items()},
                "evicts": {n: None if v is None else list(v) for n, v in self.evicts.items()}}


def fit_sets(sizes: dict[str, int], cap: int) -> list[tuple[str, ...]]:
    """The maximal sets of ``sizes``' profiles whose sum fits in ``cap`` (none can be added),
    largest first; [] for more than :data:`MAX_SETS` profiles."""
    names = [n for n in sizes if sizes[n] <= cap]
    if len(names) > MAX_SETS:
        return []
    fits = [c for k in range(len(names), 0, -1) for c in itertools.combinations(names, k)
            if sum(sizes[n] for n in c) <= cap]
    return [c for c in fits if not any(set(c) < set(o) for o in fits)]


def together(sizes: dict[str, int], caps: dict[str, int]) -> Together:
    """The sets per GPU of ``caps`` (or :data:`ALL` for one budget), and each profile's evictions."""
    per_gpu = ALL not in caps
    servers = {n: Server(n, estimate=size, limit=1) for n, size in sizes.items()}
    world = World(servers, budget=sum(caps.values()), gpus=caps if per_gpu else {})
    for t, name in enumerate(sizes, start=1):
        d = decide(world, Request(name, t))
        if isinstance(d, Start):
            for v, _ in d.victims:
                servers[v] = replace(servers[v], state=S.STOPPED, devices=())
            servers[name] = replace(servers[name], state=S.RUNNING, devices=d.devices, last_used=float(t))
        world = replace(world, servers=servers, now=float(t))
    loaded = {n: s.devices or ((ALL,) if not per_gpu else ()) for n, s in servers.items() if s.state is S.RUNNING}
    evicts: dict[str, tuple[str, ...] | None] = {}
    for name in sizes:
        placed = None if name in loaded else placement(world, name, len(sizes) + 1)
        evicts[name] = () if name in loaded else (None if placed is None else tuple(v for v, _ in placed[0]))
    return Together({g: fit_sets(sizes, cap) for g, cap in caps.items()}, loaded, evicts)
