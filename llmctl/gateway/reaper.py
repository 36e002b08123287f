"""The pool's clock and its reading of the supervisor: a task that, every tick, stops the
servers idle for their TTL (and brings a group's primary back; both decided in
:mod:`~llmctl.gateway.policy`) and re-reads the supervisor's state: at once when woken, on
every tick for a while after a server could not be reached, else every
``serve --refresh-interval``. A part of :class:`~llmctl.gateway.pool.Pool` kept apart for size:
its changes go through the pool's transition methods, synchronously (the pool's ownership rule)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..errors import LlmctlError
from .policy import idle_expired, primary_to_restore
from .records import Record
from .states import FROM_SUPERVISOR, GatewayState

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("llmctl.gateway")
S = GatewayState

SUSPECT_WINDOW = 5.0  #: seconds of state re-reads after a server could not be reached
SUSPECT_EVERY = 0.5  #: ... at most this often (a status runs the GPU tools and docker inspect)


class Reaper:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._suspect_until = 0.0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="llmctl-gateway-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def suspect(self) -> None:
        """Re-read the supervisor's state now, and on every tick for :data:`SUSPECT_WINDOW` s."""
        self._suspect_until = time.monotonic() + SUSPECT_WINDOW
        if self._wake is not None:
            self._wake.set()

    def tick(self) -> float:
        """Seconds between passes: a quarter of the shortest idle TTL, at most 0.5, at least 0.05."""
        ttls = [r.idle_ttl for r in self.pool.records.values() if r.idle_ttl is not None]
        return min([0.5] + [max(0.05, t / 4) for t in ttls])

    async def _run(self) -> None:
        assert self._wake is not None
        tick, interval = self.tick(), self.pool.gw.refresh_interval
        last = time.monotonic()
        while not self.pool.closing:
            try:
                await asyncio.wait_for(self._wake.wait(), tick)
                woke = True
            except asyncio.TimeoutError:
                woke = False
            self._wake.clear()
            try:
                self.idle_pass()
                now = time.monotonic()
                suspect = now < self._suspect_until and now - last >= SUSPECT_EVERY
                if woke or suspect or (interval and now - last >= interval):
                    last = time.monotonic()
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the reaper must outlive any one failure
                log.exception("gateway reaper")

    # -- idle TTL and primary return ------------------------------------------------------
    def idle_pass(self) -> None:
        """Stop the servers idle for their TTL."""
        pool = self.pool
        for name in idle_expired(pool.world()):
            rec = pool.records[name]
            log.info("%s: idle for %.0f s (idle_ttl %s): stopping", name, time.monotonic() - rec.last_used,
                     rec.idle_ttl)
            pool._set(rec, S.STOPPING)
            pool._spawn(self._idle_stop(rec))
            pool._changed()

    async def _idle_stop(self, rec: Record) -> None:
        pool = self.pool
        try:
            await pool._stop(rec, "idle")
        except LlmctlError:
            return
        primary = primary_to_restore(pool.world(), rec.name, pool.ticket())
        if primary is not None:
            log.info("%s: group %s idle: bringing its primary back", primary, rec.profile.group)
            pool._begin_start(pool.records[primary], ())

    # -- the supervisor's view ------------------------------------------------------------
    async def refresh(self) -> None:
        """Align with the supervisor: servers started or stopped elsewhere (`llmctl up/down`),
        crashed, or being restarted by their keeper. Records that changed meanwhile are kept."""
        pool = self.pool
        snap = {r.name: r.version for r in pool.records.values() if r.state not in (S.STARTING, S.STOPPING)}
        if not snap:
            return
        try:
            seen = await pool._call(pool.control.status, list(snap))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read the servers' state: %s", getattr(exc, "message", exc))
            return
        changed = False
        for o in seen:
            rec = pool.records.get(o.name)
            new = FROM_SUPERVISOR.get(o.state, S.STOPPED)
            if rec is None or rec.version != snap.get(o.name) or new is rec.state:
                continue
            if new is S.RUNNING:
                rec.last_used = time.monotonic()
            if new in (S.STOPPED, S.FAILED):
                rec.ours = False
                rec.reason, rec.failed_at = o.message or f"the server is {o.state}", None
                pool.on_stopped(rec.name)
            log.info("%s: %s -> %s (supervisor: %s)", rec.name, rec.state, new, o.state)
            pool._set(rec, new)
            changed = True
        if changed:
            pool._changed()
