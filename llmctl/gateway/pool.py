"""The one owner of routing state: which servers run, start, stop; who uses them; who waits.

What to do is decided by :func:`~llmctl.gateway.policy.decide` and its neighbours, from plain
data; this module carries the decisions out and keeps the records (their states and transitions:
:mod:`~llmctl.gateway.states`).

**Ownership rule.** Every read and write of a :class:`Record` happens on the gateway's event
loop, in a *synchronous* method of :class:`Pool` (no ``await`` inside a transition), so two
transitions can never interleave: the event loop is the lock, and it can never be held across
an ``await``. The blocking supervisor calls (start, stop, status) run in worker threads; only the
coroutine that awaited them writes their outcome back, again synchronously. Every transition
ends with :meth:`Pool._changed`, which wakes every waiting request to re-decide. A waiting
request holds nothing, so a swap and a request cannot deadlock (the TTL-vs-request deadlock
of llama-swap #946 came from a stop and a start each holding what the other needed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from ..errors import SIGILL_FIX, IllegalInstruction, LlmctlError
from ..gpu.placement import BudgetValue, budget_by_gpu, is_free
from ..profiles.schema import Config
from ..units import format_size
from .config import GatewayConfig
from .control import ServerControl
from .errors import Busy, GatewayHTTPError, NotRunning, Unavailable
from .metrics import NO_METRICS, PoolMetrics
from .policy import Admit, Group, Reject, Request, Wait, World, decide, idle_ttl, members, stop_on_exit
from .reaper import Reaper
from .records import Lease, Record, Views, Waiter
from .scheduler import learned_load
from .states import GatewayState, check_transition

log = logging.getLogger("llmctl.gateway")
S = GatewayState
T = TypeVar("T")


class Pool:
    """Routing state of one gateway; ``control`` makes the (blocking) supervisor calls."""

    def __init__(self, config: Config, gw: GatewayConfig, control: ServerControl, *, budget: int | None = None,
                 metrics: PoolMetrics | None = None, on_stopped: Callable[[str], None] | None = None) -> None:
        self.config, self.gw, self.control = config, gw, control
        self.budget = budget
        #: per-GPU budgets (``defaults.vram_budget`` as a map; serve --vram-budget is one number)
        self.gpus = _per_gpu(config.defaults.vram_budget, control) if budget is not None and gw.vram_budget is None \
            else {}
        self.metrics = metrics if metrics is not None else NO_METRICS
        self.on_stopped = on_stopped or (lambda name: None)
        groups = members((p.name, p.group) for p in config.profiles.values())
        self.groups = {n: Group(groups.get(n, ()), g.exclusive, g.primary) for n, g in config.groups.items()}
        self.records = {name: Record(p, limit=p.max_concurrent or gw.max_concurrent,
                                     idle_ttl=self.default_idle_ttl(name),
                                     min_resident=self.default_min_resident(name))
                        for name, p in config.profiles.items()}
        self.closing = False
        self._tickets = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._event: asyncio.Event | None = None
        self.reaper = Reaper(self)

    # -- life -----------------------------------------------------------------------------
    async def start(self, estimates: Callable[[], dict[str, int]] | None = None) -> None:
        """Read the supervisor's state, compute the estimates (when there is a budget), start
        the reaper (idle TTL, primary return, periodic refresh)."""
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="llmctl-gateway")
        self._event = asyncio.Event()
        if estimates is not None and self.budget is not None:
            for name, size in (await self._call(estimates)).items():
                self.records[name].estimate = size
        await self.refresh()
        self.reaper.start()

    async def shutdown(self, policy: str = "started") -> list[str]:
        """Refuse new requests; stop servers per ``policy`` (started | all | none) and any start
        still under way (unless none); return the names stopped."""
        self.closing = True
        self._changed()
        await self.reaper.stop()
        names = [r.name for r in self.records.values() if stop_on_exit(r.state, r.ours, policy)]
        if names:
            log.info("stopping %s", ", ".join(names))
            results = await asyncio.gather(*(self._call(self.control.stop, n) for n in names), return_exceptions=True)
            for n, r in zip(names, results):
                if isinstance(r, BaseException):
                    log.warning("could not stop %s: %s", n, getattr(r, "message", r))
                else:
                    self._set(self.records[n], S.STOPPED)
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
        w = Waiter(self.ticket(), start)
        rec.waiting.add(w.ticket)
        t0 = time.monotonic()
        if start:
            rec.asked(t0)  # demand for it (a fallback tried without starting counts once served)
        deadline = deadline if deadline is not None else t0 + self.gw.wait_timeout
        try:
            while (lease := self._decide(rec, w)) is None:
                assert self._event is not None, "Pool.start() first"
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    wake = remaining if w.until is None else min(remaining, w.until - time.monotonic())
                    await asyncio.wait_for(self._event.wait(), max(0.0, wake))
                except asyncio.TimeoutError:
                    if w.until is not None and time.monotonic() < deadline:
                        continue  # its min_resident wait is over: decide again
                    raise Unavailable(f"{name}: waited {time.monotonic() - t0:.0f} s ({w.why or rec.state}); "
                                      f"giving up (serve --wait-timeout)", profile=name,
                                      state=rec.state.value) from None
            return lease
        finally:
            rec.waiting.discard(w.ticket)
            had_claims = bool(w.claimed)
            self._drop_claims(w)
            if had_claims or rec.claims:
                self._changed()

    def _decide(self, rec: Record, w: Waiter) -> Lease | None:
        """Carry out the policy's decision: admit (a lease), wait (None), start (None), or raise.
        Synchronous: this is a transition."""
        if self.records.get(rec.name) is not rec:  # its profile was removed by a reload (gateway/reload.py)
            raise Unavailable(f"{rec.name} was removed from the profile files while the request waited",
                              profile=rec.name)
        d = decide(self.world(), Request(rec.name, w.ticket, w.start, w.attempt))
        if isinstance(d, Admit):
            rec.inflight += 1
            rec.served += 1
            rec.last_used = time.monotonic()
            if not w.start:
                rec.asked(rec.last_used)
            return Lease(rec, self._release)
        if isinstance(d, Reject):
            raise self._refusal(rec, d)
        if isinstance(d, Wait):
            for other in d.claim:
                self.records[other].claims.add(w.ticket)
                w.claimed.add(other)
            w.why, w.until = d.why, d.until
            return None
        self._drop_claims(w)
        w.until = None
        w.attempt = self._begin_start(rec, d.victims, d.devices)
        w.why = f"{rec.name} is starting"
        return None

    def _drop_claims(self, w: Waiter) -> None:
        for other in w.claimed:
            self.records[other].claims.discard(w.ticket)
        w.claimed.clear()

    def _refusal(self, rec: Record, d: Reject) -> GatewayHTTPError:
        if d.kind == "busy":
            where = (f"max_concurrent: {rec.profile.max_concurrent} in its profile" if rec.profile.max_concurrent
                     else f"serve --max-concurrent {self.gw.max_concurrent}")
            return Busy(f"{rec.name} is already serving {rec.inflight} requests (the limit: {where}); retry later",
                        profile=rec.name)
        if d.kind == "not-running":
            return NotRunning(d.text, profile=rec.name)
        return Unavailable(d.text, profile=rec.name)

    def _release(self, rec: Record, seconds: float) -> None:
        rec.inflight -= 1
        rec.last_used = time.monotonic()
        rec.served_one(rec.last_used, seconds)
        if rec.inflight == 0 and (rec.claims or any(r.waiting for r in self.records.values())):
            self._changed()

    # -- starts and stops -----------------------------------------------------------------
    def _begin_start(self, rec: Record, victims: tuple[tuple[str, str], ...], devices: tuple[str, ...] = ()) -> int:
        stops = [(self.records[n], why) for n, why in victims]
        if devices:
            rec.placed = devices
        for v, _ in stops:
            self._set(v, S.STOPPING)
        rec.attempt += 1
        rec.reason = ""
        self._set(rec, S.STARTING)
        self._spawn(self._run_start(rec, stops, rec.attempt))
        self._changed()
        return rec.attempt

    async def _run_start(self, rec: Record, victims: list[tuple[Record, str]], attempt: int) -> None:
        t0 = time.monotonic()
        try:
            if victims:
                log.info("%s: stopping %s first", rec.name, ", ".join(f"{v.name} ({why})" for v, why in victims))
                results = await asyncio.gather(*(self._stop(v, why) for v, why in victims), return_exceptions=True)
                for (v, _), r in zip(victims, results):
                    if isinstance(r, BaseException):
                        raise Unavailable(f"{rec.name} was not started: stopping {v.name} failed: "
                                          f"{getattr(r, 'message', r)}", profile=rec.name)
            log.info("%s: starting", rec.name)
            t1 = time.monotonic()
            placed = () if rec.profile.devices else rec.placed
            outcome = await self._call(self.control.start, rec.name, *([placed] if placed else []))
            rec.load_s = learned_load(rec.load_s, time.monotonic() - t1)
            rec.ours = rec.ours or outcome in ("started", "adopted")
            rec.last_used = time.monotonic()
            self._set(rec, S.RUNNING)
            self.metrics.start_result(rec.name, True, time.monotonic() - t0)
            log.info("%s: running (%s in %.1f s)", rec.name, outcome, time.monotonic() - t0)
            if self.budget is not None and hasattr(self.control, "measure"):
                self._spawn(self._measure(rec))
        except asyncio.CancelledError:
            self._fail(rec, attempt, "the gateway is shutting down")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must end in a state and a wake-up
            msg = _start_error(rec.name, exc)
            self._fail(rec, attempt, msg)
            self.metrics.start_result(rec.name, False, time.monotonic() - t0)
            log.warning("%s", msg)
        finally:
            self._changed()

    async def _measure(self, rec: Record) -> None:
        """Estimates that learn: the GPU memory the server was seen to take once healthy (kept by
        control.measure in gpu/learned.py) replaces its estimate for the budget from now on."""
        try:
            size = await self._call(self.control.measure, rec.name)
        except Exception as exc:  # noqa: BLE001 - a GPU tool that fails leaves the estimate as it was
            log.info("%s: GPU memory not measured (%s)", rec.name, exc)
            return
        if size and rec.state is S.RUNNING and size != rec.estimate:
            log.info("%s: takes %s of GPU memory (measured; expected %s)", rec.name, format_size(size),
                     format_size(rec.estimate) if rec.estimate else "unknown")
            rec.estimate = size
            self._changed()

    def _fail(self, rec: Record, attempt: int, reason: str) -> None:
        rec.reason, rec.failed_at, rec.failed_attempt = reason, time.monotonic(), attempt
        self._set(rec, S.FAILED)

    async def _stop(self, rec: Record, why: str) -> None:
        """Stop ``rec`` (already marked ``stopping``); raise if processes survive."""
        try:
            await self._call(self.control.stop, rec.name)
        except LlmctlError as exc:
            rec.reason, rec.failed_at = f"could not be stopped: {exc.message}", None
            self._set(rec, S.FAILED)
            raise
        else:
            rec.ours = False
            self._set(rec, S.STOPPED)
            self.metrics.stopped(rec.name, why)
            log.info("%s: stopped (%s)", rec.name, why)
        finally:
            self.on_stopped(rec.name)
            self._changed()

    # -- idle TTL -------------------------------------------------------------------------
    def default_idle_ttl(self, name: str) -> float | None:
        """``name``'s idle TTL by its profile (see :func:`~llmctl.gateway.policy.idle_ttl`)."""
        p = self.config.profiles[name]
        return idle_ttl(name, p.idle_ttl, self.groups.get(p.group or ""), self.gw.primary_return)

    def default_min_resident(self, name: str) -> float:
        """``name``'s ``min_resident:``, else ``defaults.min_resident``; a member of an exclusive
        group swaps as written (0) unless its profile says otherwise."""
        p = self.config.profiles[name]
        if p.min_resident is not None:
            return p.min_resident
        group = self.groups.get(p.group or "")
        return 0.0 if group is not None and group.exclusive else self.config.defaults.min_resident

    def set_idle_ttl(self, name: str, seconds: float | None) -> None:
        """A client's idle TTL for ``name`` from now on (Ollama's ``keep_alive``): 0 stops it as
        soon as it is idle, None never; the reaper's next pass applies it."""
        self.records[name].idle_ttl = seconds

    # -- the supervisor's view (kept by the reaper) ---------------------------------------
    def suspect(self, name: str) -> None:
        """A request could not reach ``name``: read the supervisor's state now, and on every
        tick for a few seconds (its keeper may not have noticed the death yet)."""
        self.reaper.suspect()

    async def refresh(self) -> None:
        """Align with the supervisor now (see :meth:`Reaper.refresh <llmctl.gateway.reaper.Reaper.refresh>`)."""
        await self.reaper.refresh()

    # -- plumbing -------------------------------------------------------------------------
    def world(self) -> World:
        """The records as the policy reads them, now."""
        now = time.monotonic()
        return World(Views(self.records, now), self.groups, self.budget,
                     now, self.gw.retry_failed_after, self.closing, self.gpus)

    def _set(self, rec: Record, state: GatewayState) -> None:
        """The one way a record changes state (raises IllegalTransition for one the table lacks)."""
        check_transition(rec.state, state)
        rec.state = state
        rec.version += 1
        rec.since = time.monotonic()

    def _changed(self) -> None:
        """Wake every waiting request (each re-decides)."""
        if self._event is not None:
            ev, self._event = self._event, asyncio.Event()
            ev.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def ticket(self) -> int:
        """The next arrival-order ticket."""
        return next(self._tickets)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [r.row(now) for r in self.records.values()]


def _per_gpu(value: BudgetValue, control: ServerControl) -> dict[str, int]:
    """GPU id -> bytes: a ``vram_budget`` map, or under ``free`` each GPU's free memory now (with
    what llmctl's servers hold there: control.capacity); {} for one number."""
    if is_free(value):
        capacity = getattr(control, "capacity", None)
        return capacity() if capacity is not None else {}
    return budget_by_gpu(value)


def _start_error(name: str, exc: Exception) -> str:
    """What a failed start tells the requests that waited for it."""
    msg = exc.message if isinstance(exc, LlmctlError) else f"unexpected error while starting: {exc!r}"
    if isinstance(exc, IllegalInstruction) and SIGILL_FIX not in msg:
        msg = f"{msg}; {SIGILL_FIX}"  # a client sees only the message: it names the fix too
    if not isinstance(exc, LlmctlError):
        log.exception("%s: start failed", name)
    return msg
