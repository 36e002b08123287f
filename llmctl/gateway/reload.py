"""Hot reload of the profile files (`serve` on SIGHUP, and on change with ``--watch``).

:func:`diff` compares two configurations (pure). :func:`apply` swaps the gateway onto a new one in
one synchronous step on the event loop (the pool's ownership rule): added profiles get a record
and can be asked for at once; removed ones leave the router (404) and are drained: their in-flight
requests finish, then the server is stopped if the gateway started it; changed ones take their new
settings and, when the gateway started them, are marked ``stopping`` (new requests wait), stopped
once their in-flight requests are done, and started again by the next request, with the new
settings. A file with errors is refused: the errors are logged and the old configuration stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..errors import LlmctlError
from ..profiles.schema import Config
from .policy import Group, members
from .records import Record
from .states import GatewayState as S

if TYPE_CHECKING:
    from .app import Gateway
    from .pool import Pool

log = logging.getLogger("llmctl.gateway")
POLL_S = 1.0  #: seconds between two looks at the profile files (--watch)


@dataclass(frozen=True)
class Diff:
    """What a reload changes: profile names added, removed, changed; ``rest``: tasks, groups or
    defaults differ."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    rest: bool = False

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.rest)

    def describe(self) -> str:
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if names]
        return "; ".join(parts + (["tasks, groups or defaults changed"] if self.rest else [])) or "no change"


def essence(obj: Any) -> Any:
    """What a profile (task, group) says, without where it was written (its file and lines)."""
    return tuple((f.name, getattr(obj, f.name)) for f in fields(obj) if not f.metadata.get("internal"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(essence(a[k]) == essence(b[k]) for k in a)


def diff(old: Config, new: Config) -> Diff:
    """Which profiles ``new`` adds, removes and changes compared with ``old``."""
    added = tuple(n for n in new.profiles if n not in old.profiles)
    removed = tuple(n for n in old.profiles if n not in new.profiles)
    changed = tuple(n for n in new.profiles
                    if n in old.profiles and essence(old.profiles[n]) != essence(new.profiles[n]))
    rest = not (_same(old.tasks, new.tasks) and _same(old.groups, new.groups) and old.defaults == new.defaults)
    return Diff(added, removed, changed, rest)


# -- applying a new configuration -----------------------------------------------------------
def budget_after(old: Config, new: Config, current: int | None, resolve: Callable[[], int | None]) -> int | None:
    """The budget under ``new``: ``resolve()`` (which may raise on a bad ``vram_budget``), except
    that ``free`` in both stays what it measured when the gateway started: what other programs
    hold on the GPUs moves all the time, and a budget is applied only at start anyway."""
    from ..gpu.placement import is_free

    if is_free(old.defaults.vram_budget) and is_free(new.defaults.vram_budget):
        return current
    return resolve()


def apply(gateway: Gateway, new: Config) -> Diff:
    """Swap ``gateway`` onto ``new`` (synchronous: one transition); drains run in the background."""
    from .app import resolve_budget
    from .control import SupervisorControl
    from .routing import Router

    d = diff(gateway.config, new)
    if not d:
        return d
    budget = budget_after(gateway.config, new, gateway.pool.budget, lambda: resolve_budget(new, gateway.gw))
    pool = gateway.pool
    gateway.config, gateway.router = new, Router(new)
    gateway.upstreams.insecure = frozenset(n for n, p in new.profiles.items() if not p.verify)
    if isinstance(pool.control, SupervisorControl):
        pool.control.config = pool.control.supervisor.config = new
    pool.config = new
    groups = members((p.name, p.group) for p in new.profiles.values())
    pool.groups = {n: Group(groups.get(n, ()), g.exclusive, g.primary) for n, g in new.groups.items()}
    if budget != pool.budget:
        log.warning("the VRAM budget changed in the profile files; restart `llmctl serve` to apply it")
    for name in d.removed:
        rec = pool.records.pop(name)
        pool._spawn(_drain(pool, rec, "removed from the profiles", stop=rec.ours))
    for name in d.added:
        pool.records[name] = Record(new.profiles[name])
    for name in d.changed:
        rec = pool.records[name]
        rec.profile, rec.placed = new.profiles[name], ()
        if rec.ours:
            marked = rec.state is S.RUNNING
            if marked:  # at once: a new request must not reach the old server at a new address
                pool._set(rec, S.STOPPING)
            pool._spawn(_drain(pool, rec, "changed in the profiles", stop=True, marked=marked))
        elif rec.state in (S.RUNNING, S.RECOVERING):
            log.warning("%s changed, but the gateway did not start its server: it keeps its old settings until "
                        "restarted (llmctl restart %s)", name, name)
    for name in (pool.records if d.rest else d.added + d.changed):
        rec, prof = pool.records[name], new.profiles[name]
        rec.limit = prof.max_concurrent or gateway.gw.max_concurrent
        rec.idle_ttl, rec.min_resident = pool.default_idle_ttl(name), pool.default_min_resident(name)
    if pool.budget is not None and (d.added or d.changed):
        pool._spawn(_estimate(gateway, d.added + d.changed))
    pool._changed()
    return d


async def _estimate(gateway: Gateway, names: tuple[str, ...]) -> None:
    """The GPU memory the added and changed profiles are expected to take (for the budget)."""
    sizes = await gateway.pool._call(gateway._estimates)
    for name in names:
        rec = gateway.pool.records.get(name)
        if rec is not None and name in sizes:
            rec.estimate = sizes[name]


async def _until(pool: Pool, done: Callable[[], bool], step: float = 0.1) -> None:
    """Wait until ``done()``, looking again after every change in the pool (and every ``step``)."""
    while not done():
        event = pool._event
        if event is None:
            await asyncio.sleep(step)
            continue
        try:
            await asyncio.wait_for(event.wait(), step)
        except asyncio.TimeoutError:
            pass


async def _drain(pool: Pool, rec: Record, why: str, *, stop: bool, marked: bool = False) -> None:
    """Let ``rec``'s in-flight requests finish (new ones wait), then stop its server (``stop``).
    ``marked``: apply has already marked it ``stopping``."""
    if not marked:
        await _until(pool, lambda: rec.state not in (S.STARTING, S.RECOVERING, S.STOPPING))
        if not stop or rec.state is not S.RUNNING:  # closing too: shutdown no longer sees a removed one
            if rec.state is S.RUNNING and not stop:
                log.info("%s: %s; its server was not started by the gateway and keeps running", rec.name, why)
            return
        pool._set(rec, S.STOPPING)
        pool._changed()
    if rec.inflight:
        log.info("%s: %s; stopping it once its %d request(s) in flight are done", rec.name, why, rec.inflight)
    await _until(pool, lambda: rec.inflight == 0)
    try:
        await pool._stop(rec, why)
    except LlmctlError as exc:
        log.warning("%s: could not be stopped after a reload: %s", rec.name, exc.message)


# -- when to reload -------------------------------------------------------------------------
def signature(paths: list[str]) -> tuple[tuple[str, int, int], ...]:
    """Each profile file's path, modification time and size (-1: missing)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((p, -1, -1))
    return tuple(out)


class Reloader:
    """Reloads ``gateway`` from ``load()`` on SIGHUP and, with ``watch``, when ``files()`` (the
    profile files, found again each time) change."""

    def __init__(self, gateway: Gateway, load: Callable[[], Config], files: Callable[[], list[str]],
                 watch: bool = False) -> None:
        self.gateway, self.load, self.files, self.watch = gateway, load, files, watch
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen: tuple[tuple[str, int, int], ...] = ()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload("SIGHUP")))
        if self.watch:
            self._seen = signature(self.files())
            self._spawn(self._poll())

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            now = await asyncio.to_thread(lambda: signature(self.files()))
            if now != self._seen:
                self._seen = now
                await self.reload("a profile file changed")

    async def reload(self, why: str) -> bool:
        """Load the profile files again and apply them; on errors log them and keep the old ones."""
        async with self._lock:
            if self.gateway.pool.closing:
                return False
            try:
                new = await asyncio.to_thread(self.load)
                d = apply(self.gateway, new)
            except LlmctlError as exc:
                detail = f"\n{exc.detail}" if getattr(exc, "detail", None) else ""
                log.error("reload (%s) refused, the profiles stay as they were: %s%s", why, exc.message, detail)
                return False
            log.info("reloaded the profiles (%s): %s", why, d.describe())
            return True
