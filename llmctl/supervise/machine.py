"""The server state machine of a keeper: pure logic, no OS calls, time passed in.

The keeper feeds it events (spawned, health result, exit, stop request, clock ticks) and
carries out the :class:`Action` it returns. Unit tests drive it with a fake clock.

States (the ``state`` field of ``status``)::

    starting   server spawned, health not yet 200 (llama-server answers 503 while loading)
    running    health answered 200; probed every health_interval
    unhealthy  running, but the last `health_failures` probes failed
    backoff    the server died; the next start is scheduled (restart policy)
    failed     given up: died while first starting, start timeout, crash loop, or policy `no`
    stopped    stopped on request, or exited cleanly under `restart: on-failure`
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from ..errors import exit_words


class State(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    FAILED = "failed"


ALIVE = (State.STARTING, State.RUNNING, State.UNHEALTHY)
TERMINAL = (State.STOPPED, State.FAILED)


class Health(str, enum.Enum):
    OK = "ok"  #: 200
    LOADING = "loading"  #: 503: the engine is up but still loading the model
    DOWN = "down"  #: refused, timed out, or any other answer


class Action(enum.Enum):
    NONE = "none"
    SPAWN = "spawn"  #: start the server (again)
    KILL = "kill"  #: stop the server's process tree (start timeout)
    RESTART = "restart"  #: stop the server's tree; it will be started again (unhealthy)


@dataclass
class Policy:
    restart: str = "on-failure"  #: no | on-failure | always
    start_timeout: float = 300.0
    health_failures: int = 3
    backoff_base: float = 1.0  #: first delay; doubles per quick death
    backoff_cap: float = 60.0
    stable_after: float = 60.0  #: running this long resets the backoff
    crash_limit: int = 5  #: deaths within crash_window -> failed
    crash_window: float = 300.0
    restart_unhealthy: bool = False  #: an `unhealthy` server is killed and restarted
    #: exit codes that mean "the command line or install is wrong": never retried
    fatal_codes: tuple = (2, 126, 127)


@dataclass
class Machine:
    policy: Policy
    state: State = State.STOPPED
    started_at: float | None = None  #: monotonic time of the last spawn
    ready_at: float | None = None  #: monotonic time health first answered 200 in this run
    ever_ready: bool = False
    next_try_at: float | None = None  #: monotonic time of the next spawn in backoff
    restarts: int = 0
    quick_deaths: int = 0  #: deaths since the last stable period (drives the delay)
    deaths: deque = field(default_factory=deque)  #: monotonic times of recent deaths
    failures: int = 0  #: health failures in a row while running
    exit_code: int | None = None
    exit_signal: int | None = None
    health: Health | None = None
    reason: str = ""  #: why the machine is in its state (shown by status)
    stopping: bool = False

    # -- events ---------------------------------------------------------------------------
    def spawned(self, now: float) -> None:
        # stopped/backoff -> starting: a fresh server process exists.
        self.state = State.STARTING
        self.started_at, self.ready_at, self.next_try_at = now, None, None
        self.failures, self.health, self.reason = 0, None, ""

    def health_result(self, result: Health, now: float) -> None:
        self.health = result
        if self.state is State.STARTING:
            if result is Health.OK:
                # starting -> running: the engine answers 200 on its health endpoint.
                self.state, self.ready_at, self.ever_ready = State.RUNNING, now, True
            # 503 (loading) and no answer keep it starting; the start timeout bounds the wait.
            return
        if self.state not in (State.RUNNING, State.UNHEALTHY):
            return
        if result is Health.DOWN:
            self.failures += 1
            if self.failures >= self.policy.health_failures and self.state is State.RUNNING:
                # running -> unhealthy: K probes in a row failed while the process lives.
                self.state = State.UNHEALTHY
                self.reason = f"{self.failures} health checks failed in a row"
            return
        # unhealthy -> running: a probe succeeded again (503 counts: the engine answers).
        self.failures = 0
        if self.state is State.UNHEALTHY:
            self.state, self.reason = State.RUNNING, ""

    def exited(self, code: int | None, signal: int | None, now: float) -> None:
        self.exit_code, self.exit_signal, self.health = code, signal, None
        how = exit_words(code, signal)  # SIGILL is named with its cause
        if self.stopping:
            # any -> stopped: we asked it to stop.
            self.state, self.reason = State.STOPPED, "stopped on request"
            return
        if self.state is State.STARTING and not self.ever_ready:
            # starting -> failed: it died before ever answering health (bad flags, model...):
            # retrying would only repeat the failure, so fail fast and let `up` report it.
            self.state, self.reason = State.FAILED, f"{how} while starting"
            return
        clean = code == 0 and not signal
        if code in self.policy.fatal_codes:
            # running -> failed: the exit code says the configuration is wrong; retrying won't help.
            self.state, self.reason = State.FAILED, f"{how} (a configuration error: not restarted)"
            return
        if self.policy.restart == "no" or (self.policy.restart == "on-failure" and clean):
            # running -> stopped/failed: the policy does not restart.
            self.state = State.STOPPED if clean else State.FAILED
            self.reason = how
            return
        if self.ready_at is not None and now - self.ready_at >= self.policy.stable_after:
            self.quick_deaths = 0  # it ran long enough: start the backoff afresh
        self.quick_deaths += 1
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.policy.crash_window:
            self.deaths.popleft()
        if len(self.deaths) >= self.policy.crash_limit:
            # running -> failed: crash loop; no endless retries.
            self.state = State.FAILED
            self.reason = (f"crash loop: died {len(self.deaths)} times within "
                           f"{self.policy.crash_window:.0f}s (last: {how})")
            return
        # running/unhealthy -> backoff: restart later, delay doubling up to the cap.
        delay = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (self.quick_deaths - 1))
        self.state, self.next_try_at = State.BACKOFF, now + delay
        self.reason = f"{how}; restarting in {delay:.0f}s"

    def stop_requested(self) -> None:
        self.stopping = True
        if self.state is State.BACKOFF:
            # backoff -> stopped: nothing is running, cancel the scheduled start.
            self.state, self.reason, self.next_try_at = State.STOPPED, "stopped on request", None

    def killed_for_timeout(self) -> None:
        # starting -> failed: the start timeout ran out and the tree was stopped.
        self.state = State.FAILED
        self.reason = f"start timeout: no healthy answer within {self.policy.start_timeout:.0f}s"

    # -- clock ------------------------------------------------------------------------------
    def tick(self, now: float) -> Action:
        """What is due at ``now`` (monotonic seconds)."""
        if self.stopping:
            return Action.NONE
        if self.state is State.STARTING and self.started_at is not None:
            if now - self.started_at > self.policy.start_timeout:
                return Action.KILL
        if self.state is State.UNHEALTHY and self.policy.restart_unhealthy:
            return Action.RESTART
        if self.state is State.BACKOFF and self.next_try_at is not None and now >= self.next_try_at:
            self.restarts += 1
            return Action.SPAWN
        return Action.NONE

    @property
    def done(self) -> bool:
        return self.state in TERMINAL
