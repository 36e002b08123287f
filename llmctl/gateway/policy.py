"""The gateway's decisions, from plain data: admit a request, make it wait, start its server
(stopping others first), or refuse it; which servers went idle; when a group's primary returns.

Nothing here waits, reads a clock or touches a process: :class:`~llmctl.gateway.pool.Pool`
builds a :class:`World` from its records, asks, and carries the answer out. So every rule can be
read, and tested, as a table (tests/test_gateway_policy.py).

**Fairness.** Each waiting request holds a ticket (arrival order). A request that must stop a
busy server (same exclusive group, or the budget) puts a *claim* on it: the server then admits
only requests older than the earliest claim, and is stopped once those are done. So a swap
waits for the requests in flight (never while they still serve a request) and cannot be
starved by new ones; the requests that arrive meanwhile wait and swap back in turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..units import format_size
from .scheduler import ALL, default_load, evictable, fit_on, on_gpus, resident, resident_until
from .states import HOLDS_MEMORY, GatewayState

S = GatewayState
StopWhy = Literal["swap", "budget"]
RejectKind = Literal["closing", "busy", "not-running", "failed", "too-big"]


@dataclass(frozen=True)
class Server:
    """What the policy knows of one profile's server."""

    name: str
    state: GatewayState = S.STOPPED
    inflight: int = 0  #: requests being served
    limit: int = 1  #: requests it may serve at once (``max_concurrent``)
    waiting: frozenset[int] = frozenset()  #: tickets of requests waiting for it
    claims: frozenset[int] = frozenset()  #: tickets of requests waiting to stop it
    group: str | None = None
    estimate: int = 0  #: bytes of GPU memory it is expected to take (0: unknown)
    last_used: float = 0.0  #: when its last request ended (or began)
    failed_at: float | None = None  #: when its start failed (None: no pause before a retry)
    failed_attempt: int = 0  #: the last start attempt that failed
    reason: str = ""  #: why it failed
    idle_ttl: float | None = None  #: idle seconds before it is stopped (None: never)
    load_s: float = 0.0  #: seconds its start is expected to take (measured; 0: never timed)
    rate: float = 0.0  #: its recent requests per second, as of now (scheduler.bumped)
    running_since: float | None = None  #: when it last became running (None: not running or unknown)
    min_resident: float = 0.0  #: seconds it stays once loaded before it may be evicted
    devices: tuple[str, ...] = ()  #: the GPUs it is on (pinned, or where it was placed; (): unknown)
    pinned: bool = False  #: its profile names its ``devices:`` (never moved)
    urgency: float = 0.0  #: how soon its next request is expected, per second (scheduler.Demand.urgency)
    serve_s: float = 0.0  #: seconds a request to it takes (measured; 0: none yet)


@dataclass(frozen=True)
class Group:
    members: tuple[str, ...]
    exclusive: bool = True  #: starting one member stops the others first
    primary: str | None = None  #: the member brought back when the others go idle


@dataclass(frozen=True)
class World:
    """Everything a decision reads, at one instant."""

    servers: Mapping[str, Server]
    groups: Mapping[str, Group] = field(default_factory=dict)
    budget: int | None = None  #: bytes of GPU memory for all servers together (None: no budget)
    now: float = 0.0  #: the monotonic clock
    retry_failed_after: float = 2.0  #: seconds a failed start is refused before a retry
    closing: bool = False  #: the gateway is shutting down
    gpus: Mapping[str, int] = field(default_factory=dict)  #: per-GPU budgets (bytes by GPU id; {}: one budget)


@dataclass(frozen=True)
class Request:
    name: str  #: the profile it asks for
    ticket: int  #: arrival order: smaller is older
    may_start: bool = True  #: may start the server (fallbacks tried for overflow may not)
    attempt: int = 0  #: the start attempt it waits on (0: none)


@dataclass(frozen=True)
class Admit:
    """Serve it now."""


@dataclass(frozen=True)
class Wait:
    """Wait for a change; put this request's claim on the servers in ``claim`` (they then admit
    only older requests, and are stopped for it once idle)."""

    claim: tuple[str, ...] = ()
    why: str = field(default="", compare=False)
    until: float | None = field(default=None, compare=False)  #: decide again by then, even if nothing changed


@dataclass(frozen=True)
class Start:
    """Stop ``victims`` (in this order, each with why), then start the server (on ``devices``
    when placed there: per-GPU budgets)."""

    victims: tuple[tuple[str, StopWhy], ...] = ()
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reject:
    """Refuse it: ``busy`` is 429, the others 503."""

    kind: RejectKind
    text: str = field(default="", compare=False)


Decision = Admit | Wait | Start | Reject


def decide(world: World, req: Request) -> Decision:
    """What to do with ``req`` now. Asked again after every change until it is not a Wait."""
    if world.closing:
        return Reject("closing", "the gateway is shutting down")
    srv = world.servers[req.name]
    if srv.state is S.RUNNING:
        if srv.claims and req.ticket > min(srv.claims) and not resident(srv, world.now):
            return Wait(why="waiting while it is swapped out for an earlier request")
        if srv.inflight >= srv.limit:
            return Reject("busy", f"{srv.name} is already serving {srv.inflight} requests")
        return Admit()
    if not req.may_start:
        return Reject("not-running", f"{srv.name} is {srv.state}")
    if srv.state in (S.STARTING, S.STOPPING, S.RECOVERING):
        return Wait(why=f"{srv.name} is {srv.state}")
    # stopped or failed: start it, unless the start this request waited on failed
    if req.attempt and srv.failed_attempt >= req.attempt:
        return Reject("failed", srv.reason)
    if srv.state is S.FAILED and srv.failed_at is not None and \
            world.now - srv.failed_at < world.retry_failed_after:
        return Reject("failed", srv.reason)
    return _make_room(world, srv, req.ticket)


def _make_room(world: World, srv: Server, ticket: int) -> Decision:
    placed = placement(world, srv.name, ticket)
    if placed is None:
        whole = (f"the GPUs' VRAM budgets ({', '.join(f'{g}: {format_size(b)}' for g, b in world.gpus.items())})"
                 if world.gpus else f"the whole VRAM budget ({format_size(world.budget or 0)})")
        return Reject("too-big", f"{srv.name} needs about {format_size(srv.estimate)} of GPU memory, more than "
                                 f"{whole}")
    plan, devices = placed
    blockers = [world.servers[n] for n, _ in plan
                if not evictable(world.servers[n], ticket) or resident(world.servers[n], world.now)]
    if not blockers:
        return Start(plan, devices)
    why = ", ".join(f"{b.name} ({_blocked(b, world.now)})" for b in blockers)
    times = [t for t in (resident_until(b) for b in blockers if resident(b, world.now)) if t is not None]
    return Wait(tuple(b.name for b in blockers if b.state is not S.STOPPING),
                f"waiting for {why} to make room for {srv.name}", min(times) if times else None)


def _blocked(srv: Server, now: float) -> str:
    if srv.inflight:
        return "busy"
    if srv.state is S.RUNNING and resident(srv, now):
        return f"loaded {now - (srv.running_since or now):.1f} s ago, min_resident {srv.min_resident:g} s"
    return str(srv.state)


def victims(world: World, name: str, ticket: int) -> tuple[tuple[str, StopWhy], ...] | None:
    """The servers to stop before ``name`` starts, each with why: the other live members of its
    exclusive group (swap), then, while the budget is exceeded, servers already stopping, then
    the set that makes room at the least reload cost (scheduler.cover: by each server's measured
    start time and how soon it is expected to be asked for again; a busy one only where it is
    worth waiting for), else, with nothing measured, idle ones least recently used first, then
    busy ones (budget). None: it does not fit even alone."""
    placed = placement(world, name, ticket)
    return None if placed is None else placed[0]


def placement(world: World, name: str, ticket: int) -> tuple[tuple[tuple[str, StopWhy], ...], tuple[str, ...]] | None:
    """:func:`victims`, and the GPUs ``name`` goes on: under per-GPU budgets (``world.gpus``) where
    :func:`~llmctl.gateway.scheduler.on_gpus` places it, else () (its profile's ``devices:``)."""
    srv = world.servers[name]
    out: dict[str, StopWhy] = {}
    group = world.groups.get(srv.group or "")
    if group is not None and group.exclusive:
        for m in group.members:
            if m != name and world.servers[m].state in HOLDS_MEMORY:
                out[m] = "swap"
    live = [s for s in world.servers.values() if s.name != name and s.state in HOLDS_MEMORY and s.estimate]
    if world.gpus and srv.estimate:
        found = on_gpus(world.gpus, [s for s in live if s.name not in out], srv, ticket, world.now)
        if found is None:
            return None
        out.update((s.name, "budget") for s in found[0])
        return tuple(out.items()), found[1]
    if world.budget is None or not srv.estimate:
        return tuple(out.items()), ()
    rest = [s for s in live if s.name not in out]
    fallback = default_load(live)
    fit = fit_on({ALL: world.budget}, rest, (ALL,), srv.estimate, ticket, world.now, fallback, srv.load_s or fallback)
    if fit is None:
        return None
    out.update((s.name, "budget") for s in fit[0])
    return tuple(out.items()), ()


def idle_ttl(name: str, own: float | None, group: Group | None, primary_return: float) -> float | None:
    """Idle seconds after which a server is stopped: its own ``idle_ttl:``; for a member of a group
    with a ``primary:`` other than the primary, ``serve --primary-return`` by default."""
    if own is None and group is not None and group.primary and group.primary != name:
        return primary_return
    return own


def idle_expired(world: World) -> list[str]:
    """Running servers idle for their TTL: nothing in flight, nobody waiting for or claiming them."""
    return [s.name for s in world.servers.values()
            if s.idle_ttl is not None and s.state is S.RUNNING and not (s.inflight or s.waiting or s.claims)
            and world.now - s.last_used >= s.idle_ttl]


def primary_to_restore(world: World, went_idle: str, ticket: int) -> str | None:
    """After ``went_idle`` was stopped for idleness, its group's primary, if it should come back:
    it is stopped or failed, nothing else of the group is live, waited for or claimed, and it
    fits without stopping anything."""
    group = world.groups.get(world.servers[went_idle].group or "")
    if group is None or not group.primary or group.primary == went_idle or world.closing:
        return None
    if world.servers[group.primary].state not in (S.STOPPED, S.FAILED):
        return None
    if any(m.state in HOLDS_MEMORY or m.waiting or m.claims for m in (world.servers[n] for n in group.members)):
        return None
    return group.primary if victims(world, group.primary, ticket) == () else None


def stop_on_exit(state: GatewayState, ours: bool, policy: str) -> bool:
    """Whether the gateway's shutdown stops this server under ``serve --stop-on-exit`` (started |
    all | none): a start still under way always (unless none); a live or failed one that the
    gateway started, or any with ``all``."""
    if policy == "none":
        return False
    return state is S.STARTING or (state in (S.RUNNING, S.RECOVERING, S.FAILED) and (policy == "all" or ours))


def members(names: Iterable[tuple[str, str | None]]) -> dict[str, tuple[str, ...]]:
    """Group name -> its members, in order, from (profile, group) pairs."""
    out: dict[str, list[str]] = {}
    for name, group in names:
        if group:
            out.setdefault(group, []).append(name)
    return {g: tuple(m) for g, m in out.items()}
