"""What the dashboard shows, as one JSON object (``GET /ui/api/state``): every profile with the
gateway's view (state, in-flight and waiting requests, idle TTL and idle time) and the
supervisor's (pid, port, model, uptime, restarts, VRAM), and the recent requests (no bodies).

The supervisor's view is read in a worker thread (files, processes, the GPU tools) and kept for
:data:`STATUS_TTL` seconds, so that several open pages cost one read."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway

STATUS_TTL = 1.0  #: seconds a supervisor reading is reused
SUPERVISOR_FIELDS = ("pid", "port", "url", "model", "uptime_s", "restarts", "exit_code", "health", "message",
                     "vram_mib")


class StateReader:
    """Builds the dashboard's state of one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._status: dict[str, dict[str, Any]] = {}
        self._read_at = -STATUS_TTL
        self._lock = asyncio.Lock()

    def _read_status(self) -> dict[str, dict[str, Any]]:
        """Blocking: the supervisor's entry of every profile (a worker thread runs it)."""
        from ..supervise.status import add_gpu_usage, entry

        config, paths = self.gw.config, self.gw.paths
        entries = [entry(config, paths, name) for name in config.profiles]
        add_gpu_usage(entries)
        return {e.name: {k: getattr(e, k) for k in SUPERVISOR_FIELDS} | {"supervisor_state": e.state}
                for e in entries}

    async def status(self) -> dict[str, dict[str, Any]]:
        async with self._lock:
            if time.monotonic() - self._read_at >= STATUS_TTL:
                self._status = await asyncio.get_running_loop().run_in_executor(None, self._read_status)
                self._read_at = time.monotonic()
            return self._status

    async def state(self) -> dict[str, Any]:
        status = await self.status()
        profiles = []
        for row in self.gw.pool.snapshot():
            prof = self.gw.config.profiles[row["name"]]
            seen = status.get(row["name"], {})
            item = {**seen, **row, "engine": prof.engine, "model": seen.get("model") or prof.model,
                    "port": seen.get("port") or prof.port}
            if row["idle_ttl"] is not None and row["idle_s"] is not None:
                item["idle_left_s"] = max(0.0, round(row["idle_ttl"] - row["idle_s"], 1))
            profiles.append(item)
        tasks = [{"name": t.name, "profile": t.profile, "fallback": list(t.fallback)}
                 for t in self.gw.config.tasks.values()]
        recent = list(self.gw.metrics.recent)[::-1]
        return {"time": time.time(), "profiles": profiles, "tasks": tasks, "recent": recent,
                "keyed": self.gw.gw.api_key is not None}
