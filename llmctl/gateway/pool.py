"""The one owner of routing state: which servers run, start, stop; who uses them; who waits.

**Ownership rule.** Every read and write of a :class:`Record` happens on the gateway's event
loop, in a *synchronous* method of :class:`Pool` (no ``await`` inside a transition), so two
transitions can never interleave: the event loop is the lock, and it can never be held across
an ``await``. The blocking supervisor calls (start, stop, status) run in worker threads; only the
coroutine that awaited them writes their outcome back, again synchronously. Every transition
ends with :meth:`Pool._changed`, which wakes every waiting request to re-decide. A waiting
request holds nothing, so a swap and a request cannot deadlock (the TTL-vs-request deadlock
of llama-swap #946 came from a stop and a start each holding what the other needed).

Per-profile states (the gateway's view, mapped from the supervisor's by :meth:`Pool.refresh`)::

    stopped --request--> starting --healthy--> running --idle TTL / swap / budget--> stopping --> stopped
    starting --start fails--> failed    (answers 503 with the reason; retried after a pause)
    running --its keeper restarts it--> recovering --healthy--> running
    any --seen by refresh (llmctl up/down elsewhere)--> what the supervisor says

**Fairness.** Each waiting request holds a ticket (arrival order). A request that must stop a
busy server (same exclusive group, or the budget) puts a *claim* on it: the server then admits
only requests older than the earliest claim, and is stopped once those are done. So a swap
waits for the requests in flight ("never while they still serve a request") and cannot be
starved by new ones; the requests that arrive meanwhile wait and swap back in turn.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import SIGILL_FIX, IllegalInstruction, LlmctlError
from ..profiles.schema import Config, Group, Profile
from ..units import format_size
from .config import GatewayConfig
from .errors import Busy, NotRunning, Unavailable

log = logging.getLogger("llmctl.gateway")

#: states in which a server holds (or is about to hold, or still holds) its memory
LIVE = ("starting", "running", "stopping", "recovering")
SUSPECT_WINDOW = 5.0  #: seconds of state re-reads after a server could not be reached
SUSPECT_EVERY = 0.5  #: ... at most this often (a status runs the GPU tools and docker inspect)
_FROM_SUPERVISOR = {"running": "running", "unhealthy": "running", "starting": "recovering",
                    "backoff": "recovering", "stopped": "stopped", "failed": "failed"}


@dataclass(eq=False)
class Record:
    """The gateway's knowledge of one profile. Written only by :class:`Pool`."""

    profile: Profile
    state: str = "stopped"  #: stopped | starting | running | stopping | recovering | failed
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

    @property
    def name(self) -> str:
        return self.profile.name


class Lease:
    """A request's hold on a running server; :meth:`release` (idempotent, synchronous) ends it."""

    __slots__ = ("pool", "record", "released")

    def __init__(self, pool: Pool, record: Record) -> None:
        self.pool, self.record, self.released = pool, record, False

    @property
    def name(self) -> str:
        return self.record.name

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._release(self.record)


@dataclass(eq=False)
class _Waiter:
    ticket: int
    start: bool  #: may start the server (fallbacks tried for overflow may not)
    attempt: int = 0  #: the start attempt it waits on
    claimed: set[str] = field(default_factory=set)
    why: str = ""


class Pool:
    """Routing state of one gateway. ``control`` has ``start(name)``, ``stop(name)`` and
    ``status(names)`` (blocking; see :class:`~llmctl.gateway.control.ServerControl`)."""

    def __init__(self, config: Config, gw: GatewayConfig, control: Any, *, budget: int | None = None,
                 metrics: Any = None, on_stopped: Callable[[str], None] | None = None) -> None:
        self.config, self.gw, self.control = config, gw, control
        self.budget = budget
        self.metrics = metrics
        self.on_stopped = on_stopped
        self.records = {name: Record(p) for name, p in config.profiles.items()}
        self.groups: dict[str, list[Record]] = {}
        for rec in self.records.values():
            if rec.profile.group:
                self.groups.setdefault(rec.profile.group, []).append(rec)
        self.closing = False
        self._tickets = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._event: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._suspect_until = 0.0
        self._reaper: asyncio.Task | None = None

    # -- life -----------------------------------------------------------------------------
    async def start(self, estimates: Callable[[], dict[str, int]] | None = None) -> None:
        """Read the supervisor's state, compute the estimates (when there is a budget), start
        the reaper (idle TTL, primary return, periodic refresh)."""
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="llmctl-gateway")
        self._event, self._wake = asyncio.Event(), asyncio.Event()
        if estimates is not None and self.budget is not None:
            for name, size in (await self._call(estimates)).items():
                self.records[name].estimate = size
        await self.refresh()
        self._reaper = asyncio.create_task(self._reap(), name="llmctl-gateway-reaper")

    async def shutdown(self, policy: str = "started") -> list[str]:
        """Refuse new requests; stop servers per ``policy`` (started | all | none) and any start
        still under way (unless none); return the names stopped."""
        self.closing = True
        self._changed()
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        names = []
        for rec in self.records.values():
            if policy == "none":
                continue
            if rec.state == "starting" or rec.state in ("running", "recovering", "failed") and \
                    (policy == "all" or rec.ours):
                names.append(rec.name)
        if names:
            log.info("stopping %s", ", ".join(names))
            results = await asyncio.gather(*(self._call(self.control.stop, n) for n in names), return_exceptions=True)
            for n, r in zip(names, results):
                if isinstance(r, BaseException):
                    log.warning("could not stop %s: %s", n, getattr(r, "message", r))
                else:
                    self._set(self.records[n], "stopped")
                    if self.metrics:
                        self.metrics.stopped(n, "exit")
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=30)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        return names

    # -- requests -------------------------------------------------------------------------
    async def acquire(self, name: str, *, start: bool = True, deadline: float | None = None) -> Lease:
        """A lease on ``name``'s running server: admitted at once when it runs and has room;
        else wait (until ``deadline``) while it starts, swaps or drains. Raises Busy (429),
        NotRunning (``start=False`` and not running), Unavailable (503: failed start, budget,
        shutting down, waited too long)."""
        rec = self.records[name]
        if rec.state == "running" and not rec.claims and not self.closing:  # the common case
            if rec.inflight >= self.limit(rec):
                raise self._busy(rec)
            return self._admit(rec)
        w = _Waiter(next(self._tickets), start)
        rec.waiting.add(w.ticket)
        t0 = time.monotonic()
        deadline = deadline if deadline is not None else t0 + self.gw.wait_timeout
        try:
            while True:
                lease = self._decide(rec, w)
                if lease is not None:
                    return lease
                event = self._event
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    await asyncio.wait_for(event.wait(), remaining)
                except asyncio.TimeoutError:
                    raise Unavailable(f"{name}: waited {time.monotonic() - t0:.0f} s ({w.why or rec.state}); "
                                      f"giving up (serve --wait-timeout)", profile=name, state=rec.state) from None
        finally:
            rec.waiting.discard(w.ticket)
            for other in w.claimed:
                self.records[other].claims.discard(w.ticket)
            if w.claimed or rec.claims:
                self._changed()

    def _decide(self, rec: Record, w: _Waiter) -> Lease | None:
        """Admit, wait (None), start, or raise. Synchronous: this is a transition."""
        name = rec.name
        if self.closing:
            raise Unavailable("the gateway is shutting down", profile=name)
        state = rec.state
        if state == "running":
            if rec.claims and w.ticket > min(rec.claims):
                w.why = "waiting while it is swapped out for an earlier request"
                return None
            if rec.inflight >= self.limit(rec):
                raise self._busy(rec)
            return self._admit(rec)
        if not w.start:
            raise NotRunning(f"{name} is {state}", profile=name)
        if state in ("starting", "stopping", "recovering"):
            w.why = f"{name} is {state}"
            return None
        # stopped or failed: start it, unless the start this request waited on failed
        if w.attempt and rec.failed_attempt >= w.attempt:
            raise Unavailable(rec.reason, profile=name)
        if state == "failed" and rec.failed_at is not None and \
                time.monotonic() - rec.failed_at < self.gw.retry_failed_after:
            raise Unavailable(rec.reason, profile=name)
        victims = self._plan(rec, w.ticket)
        blockers = [v for v in victims if not self._evictable(v, w.ticket)]
        if blockers:
            for b in blockers:
                if b.state != "stopping":
                    b.claims.add(w.ticket)
                    w.claimed.add(b.name)
            w.why = "waiting for " + ", ".join(f"{b.name} ({'busy' if b.inflight else b.state})" for b in blockers) \
                + f" to make room for {name}"
            return None
        for other in w.claimed:
            self.records[other].claims.discard(w.ticket)
        w.claimed.clear()
        w.attempt = self._begin_start(rec, victims)
        w.why = f"{name} is starting"
        return None

    def _admit(self, rec: Record) -> Lease:
        rec.inflight += 1
        rec.served += 1
        rec.last_used = time.monotonic()
        return Lease(self, rec)

    def _release(self, rec: Record) -> None:
        rec.inflight -= 1
        rec.last_used = time.monotonic()
        if rec.inflight == 0 and (rec.claims or self._has_waiters()):
            self._changed()

    def limit(self, rec: Record) -> int:
        """Requests ``rec``'s server gets at once: its ``max_concurrent:``, else serve's."""
        return rec.profile.max_concurrent or self.gw.max_concurrent

    def _busy(self, rec: Record) -> Busy:
        where = (f"max_concurrent: {rec.profile.max_concurrent} in its profile" if rec.profile.max_concurrent
                 else f"serve --max-concurrent {self.gw.max_concurrent}")
        return Busy(f"{rec.name} is already serving {rec.inflight} requests (the limit: {where}); retry later",
                    profile=rec.name)

    def _has_waiters(self) -> bool:
        return any(r.waiting for r in self.records.values())

    # -- planning -------------------------------------------------------------------------
    def exclusive_group(self, rec: Record) -> Group | None:
        g = self.config.groups.get(rec.profile.group or "")
        return g if g is not None and g.exclusive else None

    def _evictable(self, v: Record, ticket: int) -> bool:
        """``v`` may be stopped now for the request holding ``ticket``: running, nothing in
        flight, no older request waiting for it, and no older claim on it."""
        return (v.state == "running" and v.inflight == 0 and not any(t < ticket for t in v.waiting)
                and not (v.claims and min(v.claims) < ticket))

    def _plan(self, rec: Record, ticket: int) -> dict[Record, str]:
        """The servers to stop before ``rec`` starts, each with why (swap | budget)."""
        victims: dict[Record, str] = {}
        group = self.exclusive_group(rec)
        if group is not None:
            for m in self.groups.get(group.name, []):
                if m is not rec and m.state in LIVE:
                    victims[m] = "swap"
        if self.budget is not None and rec.estimate:
            need, budget = rec.estimate, self.budget
            if need > budget:
                raise Unavailable(f"{rec.name} needs about {format_size(need)} of GPU memory, more than the whole "
                                  f"VRAM budget ({format_size(budget)})", profile=rec.name)
            live = [r for r in self.records.values() if r is not rec and r.state in LIVE and r.estimate]
            used = sum(r.estimate for r in live)

            def over() -> bool:
                return used - sum(v.estimate for v in victims) + need > budget

            if over():  # already stopping first, then idle ones least recently used first, then busy ones
                for r in sorted((r for r in live if r not in victims),
                                key=lambda r: (r.state != "stopping", not self._evictable(r, ticket), r.last_used)):
                    victims[r] = "budget"
                    if not over():
                        break
        return victims

    def _begin_start(self, rec: Record, victims: dict[Record, str]) -> int:
        for v in victims:
            self._set(v, "stopping")
        rec.attempt += 1
        rec.reason = ""
        self._set(rec, "starting")
        self._spawn(self._run_start(rec, victims, rec.attempt))
        self._changed()
        return rec.attempt

    async def _run_start(self, rec: Record, victims: dict[Record, str], attempt: int) -> None:
        t0 = time.monotonic()
        try:
            if victims:
                log.info("%s: stopping %s first", rec.name,
                         ", ".join(f"{v.name} ({why})" for v, why in victims.items()))
                results = await asyncio.gather(*(self._stop(v, why) for v, why in victims.items()),
                                               return_exceptions=True)
                for v, r in zip(victims, results):
                    if isinstance(r, BaseException):
                        raise Unavailable(f"{rec.name} was not started: stopping {v.name} failed: "
                                          f"{getattr(r, 'message', r)}", profile=rec.name)
            log.info("%s: starting", rec.name)
            outcome = await self._call(self.control.start, rec.name)
            rec.ours = rec.ours or outcome in ("started", "adopted")
            rec.last_used = time.monotonic()
            self._set(rec, "running")
            if self.metrics:
                self.metrics.start_result(rec.name, True, time.monotonic() - t0)
            log.info("%s: running (%s in %.1f s)", rec.name, outcome, time.monotonic() - t0)
        except asyncio.CancelledError:
            self._fail(rec, attempt, "the gateway is shutting down")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must end in a state and a wake-up
            msg = exc.message if isinstance(exc, LlmctlError) else f"unexpected error while starting: {exc!r}"
            if isinstance(exc, IllegalInstruction) and SIGILL_FIX not in msg:
                msg = f"{msg}; {SIGILL_FIX}"  # a client sees only the message: it names the fix too
            if not isinstance(exc, LlmctlError):
                log.exception("%s: start failed", rec.name)
            self._fail(rec, attempt, msg)
            if self.metrics:
                self.metrics.start_result(rec.name, False, time.monotonic() - t0)
            log.warning("%s", msg)
        finally:
            self._changed()

    def _fail(self, rec: Record, attempt: int, reason: str) -> None:
        rec.reason, rec.failed_at, rec.failed_attempt = reason, time.monotonic(), attempt
        self._set(rec, "failed")

    async def _stop(self, rec: Record, why: str) -> None:
        """Stop ``rec`` (already marked ``stopping``); raise if processes survive."""
        try:
            await self._call(self.control.stop, rec.name)
        except LlmctlError as exc:
            rec.reason, rec.failed_at = f"could not be stopped: {exc.message}", None
            self._set(rec, "failed")
            raise
        else:
            rec.ours = False
            self._set(rec, "stopped")
            if self.metrics:
                self.metrics.stopped(rec.name, why)
            log.info("%s: stopped (%s)", rec.name, why)
        finally:
            if self.on_stopped:
                self.on_stopped(rec.name)
            self._changed()

    # -- idle TTL, primary return, refresh -----------------------------------------------
    def idle_ttl(self, rec: Record) -> float | None:
        """Idle seconds after which ``rec`` is stopped: ``idle_ttl:``; for a member of a group
        with a ``primary:`` other than the primary, ``serve --primary-return`` by default."""
        ttl = rec.profile.idle_ttl
        if ttl is None:
            g = self.config.groups.get(rec.profile.group or "")
            if g is not None and g.primary and g.primary != rec.name:
                ttl = self.gw.primary_return
        return ttl

    def _idle_pass(self) -> None:
        now = time.monotonic()
        for rec in self.records.values():
            ttl = self.idle_ttl(rec)
            if ttl is None or rec.state != "running" or rec.inflight or rec.waiting or rec.claims:
                continue
            if now - rec.last_used >= ttl:
                log.info("%s: idle for %.0f s (idle_ttl %s): stopping", rec.name, now - rec.last_used, ttl)
                self._set(rec, "stopping")
                self._spawn(self._idle_stop(rec))
                self._changed()

    async def _idle_stop(self, rec: Record) -> None:
        try:
            await self._stop(rec, "idle")
        except LlmctlError:
            return
        self._restore_primary(rec)

    def _restore_primary(self, rec: Record) -> None:
        """After ``rec`` went idle, bring its group's primary back if nothing else of the group
        runs or is wanted, and it fits without stopping anything."""
        g = self.config.groups.get(rec.profile.group or "")
        if g is None or not g.primary or g.primary == rec.name or self.closing:
            return
        primary = self.records[g.primary]
        if primary.state not in ("stopped", "failed"):
            return
        if any(m.state in LIVE or m.waiting or m.claims for m in self.groups.get(g.name, [])):
            return
        try:
            victims = self._plan(primary, next(self._tickets))
        except Unavailable:
            return
        if victims:
            return
        log.info("%s: group %s idle: bringing its primary back", primary.name, g.name)
        self._begin_start(primary, {})

    async def _reap(self) -> None:
        assert self._wake is not None
        ttls = [t for t in (self.idle_ttl(r) for r in self.records.values()) if t is not None]
        tick = min([0.5] + [max(0.05, t / 4) for t in ttls])
        interval = self.gw.refresh_interval
        last = time.monotonic()
        while not self.closing:
            try:
                await asyncio.wait_for(self._wake.wait(), tick)
                woke = True
            except asyncio.TimeoutError:
                woke = False
            self._wake.clear()
            try:
                self._idle_pass()
                now = time.monotonic()
                suspect = now < self._suspect_until and now - last >= SUSPECT_EVERY
                if woke or suspect or (interval and now - last >= interval):
                    last = time.monotonic()
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the reaper must outlive any one failure
                log.exception("gateway reaper")

    def suspect(self, name: str) -> None:
        """A request could not reach ``name``: read the supervisor's state now, and on every
        tick for a few seconds (its keeper may not have noticed the death yet)."""
        self._suspect_until = time.monotonic() + SUSPECT_WINDOW
        if self._wake is not None:
            self._wake.set()

    async def refresh(self) -> None:
        """Align with the supervisor: servers started or stopped elsewhere (`llmctl up/down`),
        crashed, or being restarted by their keeper. Records that changed meanwhile are kept."""
        snap = {r.name: r.version for r in self.records.values() if r.state not in ("starting", "stopping")}
        if not snap:
            return
        try:
            seen = await self._call(self.control.status, list(snap))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read the servers' state: %s", getattr(exc, "message", exc))
            return
        changed = False
        for o in seen:
            rec = self.records.get(o.name)
            if rec is None or rec.version != snap.get(o.name):
                continue
            new = _FROM_SUPERVISOR.get(o.state, "stopped")
            if new == rec.state:
                continue
            if new == "running":
                rec.last_used = time.monotonic()
            if new in ("stopped", "failed"):
                rec.ours = False
                rec.reason, rec.failed_at = o.message or f"the server is {o.state}", None
                if self.on_stopped:
                    self.on_stopped(rec.name)
            log.info("%s: %s -> %s (supervisor: %s)", rec.name, rec.state, new, o.state)
            self._set(rec, new)
            changed = True
        if changed:
            self._changed()

    # -- plumbing -------------------------------------------------------------------------
    def _set(self, rec: Record, state: str) -> None:
        rec.state = state
        rec.version += 1
        rec.since = time.monotonic()

    def _changed(self) -> None:
        """Wake every waiting request (each re-decides)."""
        if self._event is not None:
            ev, self._event = self._event, asyncio.Event()
            ev.set()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for rec in self.records.values():
            ttl = self.idle_ttl(rec)
            out.append({"name": rec.name, "state": rec.state, "inflight": rec.inflight, "waiting": len(rec.waiting),
                        "started_by_gateway": rec.ours, "group": rec.profile.group, "idle_ttl": ttl,
                        "idle_s": round(now - rec.last_used, 1) if rec.state == "running" and not rec.inflight else None,
                        "estimate_bytes": rec.estimate or None, "reason": rec.reason or None, "served": rec.served})
        return out
