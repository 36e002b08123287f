"""What the gateway's pool knows of each profile (:class:`Record`), a request's hold on a server
(:class:`Lease`) and a waiting request (:class:`Waiter`). Written only by the pool, on its event
loop (its ownership rule)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from ..profiles.schema import Profile
from .policy import Server
from .scheduler import Demand, bumped, decayed, learned_load
from .states import GatewayState


@dataclass(eq=False)
class Record:
    """The gateway's knowledge of one profile."""

    profile: Profile
    state: GatewayState = GatewayState.STOPPED  #: changed only by Pool._set (the transition table)
    inflight: int = 0  #: requests being served
    waiting: set[int] = field(default_factory=set)  #: tickets of requests waiting for it
    claims: set[int] = field(default_factory=set)  #: tickets of requests waiting to stop it
    last_used: float = 0.0  #: monotonic time of the last request's end (or of its start)
    ours: bool = False  #: the gateway started it (stopped on exit by default)
    reason: str = ""  #: why it failed
    failed_at: float | None = None
    attempt: int = 0  #: start attempts so far
    failed_attempt: int = 0  #: the last attempt that failed
    version: int = 0  #: bumped by every transition (a refresh applies only to an unchanged record)
    estimate: int = 0  #: bytes of GPU memory it is expected to take
    since: float = field(default_factory=time.monotonic)
    served: int = 0  #: requests admitted
    limit: int = 1  #: requests it serves at once: its ``max_concurrent:``, else serve's
    idle_ttl: float | None = None  #: idle seconds before it is stopped (see policy.idle_ttl)
    load_s: float = 0.0  #: seconds its start is expected to take (scheduler.learned_load; 0: never timed)
    rate: float = 0.0  #: requests per second as of ``rate_at`` (scheduler.bumped as each ends)
    rate_at: float = 0.0
    demand: Demand = field(default_factory=Demand)  #: when it was asked for (scheduler.Demand: its urgency)
    serve_s: float = 0.0  #: seconds a request to it takes (learned as each ends; 0: none yet)
    min_resident: float = 0.0  #: seconds it stays once loaded before it may be evicted
    placed: tuple[str, ...] = ()  #: the GPUs the gateway last started it on (per-GPU budgets)

    @property
    def name(self) -> str:
        return self.profile.name

    def view(self, now: float | None = None) -> Server:
        """The record as the policy reads it (``now``: the clock its request rate is read at)."""
        now = time.monotonic() if now is None else now
        return Server(self.name, self.state, self.inflight, self.limit, frozenset(self.waiting),
                      frozenset(self.claims), self.profile.group, self.estimate, self.last_used,
                      self.failed_at, self.failed_attempt, self.reason, self.idle_ttl, self.load_s,
                      decayed(self.rate, self.rate_at, now),
                      self.since if self.state is GatewayState.RUNNING else None, self.min_resident,
                      tuple(self.profile.devices) or self.placed, bool(self.profile.devices),
                      self.demand.urgency(now), self.serve_s)

    def asked(self, now: float) -> None:
        """A request for it arrived at ``now`` (one that may start it, or was served by it)."""
        self.demand = self.demand.asked(now)

    def served_one(self, now: float, seconds: float) -> None:
        """A request to it ended at ``now`` after ``seconds``: its request rate goes up (counted
        at the end, as ``last_used``, so equal rates fall back to least recently used), and
        the length of its requests is learned."""
        self.rate, self.rate_at = bumped(self.rate, self.rate_at, now), now
        self.serve_s = learned_load(self.serve_s, seconds)

    def row(self, now: float) -> dict[str, Any]:
        """The record for ``/v1/models``, ``/metrics`` and the dashboard."""
        idle = self.state is GatewayState.RUNNING and not self.inflight
        return {"name": self.name, "state": self.state.value, "inflight": self.inflight,
                "waiting": len(self.waiting), "started_by_gateway": self.ours, "group": self.profile.group,
                "idle_ttl": self.idle_ttl, "idle_s": round(now - self.last_used, 1) if idle else None,
                "estimate_bytes": self.estimate or None, "reason": self.reason or None, "served": self.served}


class Views(Mapping[str, Server]):
    """The records as the policy reads them, each view built when first read (a request for a
    running server reads only its own: the common case stays cheap however many profiles)."""

    def __init__(self, records: Mapping[str, Record], now: float | None = None) -> None:
        self._records, self._now = records, now
        self._views: dict[str, Server] = {}

    def __getitem__(self, name: str) -> Server:
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self._records[name].view(self._now)
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


class Lease:
    """A request's hold on a running server; :meth:`release` (idempotent, synchronous) ends it."""

    __slots__ = ("_on_release", "record", "released", "since")

    def __init__(self, record: Record, on_release: Callable[[Record, float], None]) -> None:
        self.record, self.released, self._on_release = record, False, on_release
        self.since = time.monotonic()  #: when it was admitted

    @property
    def name(self) -> str:
        return self.record.name

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._on_release(self.record, time.monotonic() - self.since)


@dataclass(eq=False)
class Waiter:
    """A request waiting in :meth:`Pool.acquire <llmctl.gateway.pool.Pool.acquire>`."""

    ticket: int  #: arrival order
    start: bool  #: may start the server (fallbacks tried for overflow may not)
    attempt: int = 0  #: the start attempt it waits on
    claimed: set[str] = field(default_factory=set)  #: the servers it put its claim on
    why: str = ""  #: what it waits for, for the message when it gives up
    until: float | None = None  #: decide again by then even if nothing changed (min_resident)
