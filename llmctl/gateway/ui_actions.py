"""The dashboard's start and stop buttons, carried out through the pool (its ownership rule:
every record change in a synchronous step on the event loop, the supervisor's calls in worker
threads), as the reaper's idle stops are.

- start: a request's way in (:meth:`Pool.acquire <llmctl.gateway.pool.Pool.acquire>`, so swap
  groups and the memory budget apply), run in the background; the lease is let go at once.
- stop: a running server is marked ``stopping`` and stopped (requests still in flight are cut
  off, as by ``llmctl down``); one its keeper is restarting, or that failed, is stopped through
  the supervisor and the pool re-reads the supervisor's state.

The page's POSTs also carry a same-origin ``Origin`` (browsers add it): one naming another site
is refused, on top of the gateway's Host, content-type and key checks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import LlmctlError
from .errors import Forbidden, GatewayHTTPError
from .states import GatewayState

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("llmctl.gateway")
S = GatewayState


class Conflict(GatewayHTTPError):
    """The server is between states (starting or stopping): try again when it settles."""

    status = 409
    kind = "conflict"


def check_origin(origin: str | None, host: str | None) -> None:
    """Refuse a request whose ``Origin`` is not the page the gateway served (``http://HOST``)."""
    if origin is None:
        return
    if host is None or origin.rstrip("/").split("://", 1)[-1] != host:
        raise Forbidden(f"a request from {origin!r} may not use the dashboard's buttons: only the dashboard's own "
                        f"page (http://{host}) may")


def start(pool: Pool, name: str) -> str:
    """Begin starting ``name`` (synchronous); what the page is told."""
    rec = pool.records[name]
    if rec.state in (S.RUNNING, S.STARTING, S.RECOVERING):
        return f"{name} is {rec.state}"
    if rec.state is S.STOPPING:
        raise Conflict(f"{name} is stopping: start it again once it has stopped", profile=name)
    pool._spawn(_start(pool, name))
    return f"{name} is starting"


async def _start(pool: Pool, name: str) -> None:
    try:
        lease = await pool.acquire(name)
    except (GatewayHTTPError, LlmctlError) as exc:
        log.warning("%s: the dashboard's start failed: %s", name, exc.message)
        return
    lease.release()


def stop(pool: Pool, name: str) -> str:
    """Begin stopping ``name`` (synchronous); what the page is told."""
    rec = pool.records[name]
    if rec.state is S.STOPPED:
        return f"{name} is not running"
    if rec.state in (S.STARTING, S.STOPPING):
        raise Conflict(f"{name} is {rec.state}: try again when it has settled", profile=name)
    if rec.state is S.RUNNING:
        pool._set(rec, S.STOPPING)
        pool._spawn(_stop_running(pool, name))
    else:  # recovering or failed: its keeper may still be alive
        pool._spawn(_stop_other(pool, name))
    pool._changed()
    log.info("%s: stopping (the dashboard asked)", name)
    return f"{name} is stopping"


async def _stop_running(pool: Pool, name: str) -> None:
    try:
        await pool._stop(pool.records[name], "dashboard")
    except LlmctlError as exc:
        log.warning("%s: the dashboard's stop failed: %s", name, exc.message)


async def _stop_other(pool: Pool, name: str) -> None:
    try:
        await pool._call(pool.control.stop, name)
    except LlmctlError as exc:
        log.warning("%s: the dashboard's stop failed: %s", name, exc.message)
    await pool.refresh()
