"""The blocking side: start, stop and read servers through the :class:`~llmctl.Supervisor`.
The pool runs these in worker threads and never touches its own state from them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from ..engines.devices import placed_on
from ..errors import SIGILL_FIX, IllegalInstruction, StartFailed, StartTimeout
from ..paths import Paths
from ..profiles.schema import Config


@dataclass
class Observed:
    """What the supervisor says of one profile."""

    name: str
    state: str  #: stopped | starting | running | unhealthy | backoff | failed
    message: str = ""


class ServerControl(Protocol):
    """Supervisor calls, as the pool needs them. Each blocks: the pool runs them in worker
    threads. :class:`SupervisorControl` is the real one; the pool's unit tests stand in one that
    only records calls."""

    def start(self, name: str, devices: tuple[str, ...] = ()) -> str:
        """Start ``name`` (on ``devices`` when the gateway placed it), wait until it is healthy;
        return how (``started``, ``adopted``, ``already-running``); raise an LlmctlError when it
        cannot."""
        ...

    def stop(self, name: str) -> None:
        """Stop ``name``; raise an LlmctlError when processes survive."""
        ...

    def status(self, names: list[str]) -> list[Observed]:
        """What the supervisor says of each of ``names``."""
        ...

    def measure(self, name: str) -> int | None:
        """Bytes of GPU memory ``name``'s running server holds, as the GPU tools say now (and
        kept as its learned figure, gpu/learned.py); None when unknown or on no GPU."""
        ...


class SupervisorControl:
    """:class:`ServerControl` through the :class:`~llmctl.Supervisor`."""

    poll = 0.05

    def __init__(self, config: Config, paths: Paths | None = None) -> None:
        import logging

        from ..supervise.control import Supervisor

        self.config = config
        warn = logging.getLogger("llmctl.gateway").warning  # the supervisor's warnings, in the gateway's log
        self.supervisor = Supervisor(config, paths or Paths.from_env(), warn=warn)

    def start(self, name: str, devices: tuple[str, ...] = ()) -> str:
        """Start ``name`` and wait until it is healthy; return ``started``, ``adopted`` or
        ``already-running``. A server whose keeper is restarting it counts as starting: wait. A
        remote profile is only probed: ``remote`` when it answers. ``devices``: the GPUs the
        gateway placed an unpinned profile on (the engine makes them its visible devices)."""
        if devices:
            self.config.profiles[name] = placed_on(self.config.profile(name), devices)
        prof = self.config.profile(name)
        if prof.remote:  # never started, stopped or evicted: it counts when it answers
            from ..engines.remote import probe

            found = probe(prof)
            if not found.reachable:
                raise StartFailed(f"{name}: the remote server at {prof.url} is unreachable: {found.message}",
                                  name=name)
            return "remote"
        result = self.supervisor.start([name])[0]
        if result.outcome != "already-running":
            return result.outcome
        deadline = time.monotonic() + self.config.profile(name).effective_start_timeout
        while True:
            entry = self.supervisor.status([name])[0]
            if entry.state in ("running", "unhealthy"):
                return "already-running"
            if entry.state in ("failed", "stopped"):
                if entry.exit_signal == 4:  # SIGILL: a client sees only the message, so it names the fix
                    raise IllegalInstruction(f"{name} failed to start: {entry.message}; {SIGILL_FIX}", name=name)
                raise StartFailed(f"{name} failed to start: {entry.message or entry.state}", name=name)
            if time.monotonic() > deadline:
                raise StartTimeout(f"{name}: not running after its start timeout (state {entry.state})", name=name)
            time.sleep(self.poll)

    def stop(self, name: str) -> None:
        self.supervisor.stop([name])

    def status(self, names: list[str]) -> list[Observed]:
        return [Observed(e.name, e.state, e.message or "") for e in self.supervisor.status(names)]

    def capacity(self) -> dict[str, int]:
        """GPU id -> bytes llmctl may fill there under ``vram_budget: free``."""
        return self.supervisor.gpu_capacity()

    def measure(self, name: str) -> int | None:
        prof = self.config.profiles.get(name)
        if prof is None or prof.remote or prof.backend == "cpu":
            return None
        [e] = self.supervisor.status([name])  # reads nvidia-smi / rocm-smi and learns what it saw
        return e.vram_mib << 20 if e.vram_mib and e.state == "running" else None
