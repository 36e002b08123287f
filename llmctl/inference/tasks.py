"""`tasks list`: each task with its route, its effective parameters, and where a request would
go right now."""

from __future__ import annotations

from typing import Any

from ..profiles.schema import Config
from ..supervise.states import READY, State
from .params import merge


def task_rows(config: Config, *, routes: bool = True) -> list[dict[str, Any]]:
    """One dict per task: name, profile, fallback, system, description, the parameters after
    ``defaults.sampling`` < task, where it is defined, and (``routes``) where `run --task NAME`
    would go now (``{"mode", "profile"}``, or ``None`` when nothing can serve it)."""
    states: dict[str, State] = {}
    if routes and config.tasks:
        from .router import server_states

        names = list(dict.fromkeys(n for t in config.tasks.values() for n in [t.profile, *t.fallback]))
        states, _ = server_states(config, names)
    rows = []
    for t in config.tasks.values():
        params = merge(config.defaults.sampling, t)
        row: dict[str, Any] = {"name": t.name, "profile": t.profile, "fallback": list(t.fallback),
                               "system": params.system, "description": t.description,
                               "sampling": params.sampling, "source": t.where()}
        if routes:
            row["route"] = _route(config, [t.profile, *t.fallback], states)
        rows.append(row)
    return rows


def _route(config: Config, names: list[str], states: dict[str, State]) -> dict | None:
    """Mirror of the router's auto mode, from already-read states (no extra probes)."""
    for n in names:
        if states.get(n) in READY:
            return {"mode": "server", "profile": n}
    first = config.profiles.get(names[0])
    if first is not None and first.engine == "llama-server":
        return {"mode": "cli", "profile": first.name}
    return None
