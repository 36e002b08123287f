"""The server state machine of a keeper: pure logic, no OS calls, time passed in.

The keeper feeds it events (spawned, health result, exit, stop request, clock ticks) and
carries out the :class:`Action` it returns. Unit tests drive it with a fake clock. The states,
their groups and the allowed transitions are :mod:`llmctl.supervise.states`; every change of
state goes through :meth:`Machine._to`, which checks the transition against that table and
records why (a :class:`~llmctl.supervise.states.Why` to branch on, words for people).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from ..errors import exit_words
from .states import PROCESS_ALIVE, TERMINAL, Reason, State, Why, check_transition

ALIVE = PROCESS_ALIVE  #: the older name of the group


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
    fatal_codes: tuple[int, ...] = (2, 126, 127)


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
    deaths: deque[float] = field(default_factory=deque)  #: monotonic times of recent deaths
    failures: int = 0  #: health failures in a row while running
    exit_code: int | None = None
    exit_signal: int | None = None
    health: Health | None = None
    reason: str = ""  #: why the machine is in its state, in words (shown by status)
    why: Why = Why.NONE  #: the kind of that reason, for code to branch on
    stopping: bool = False

    def _to(self, state: State, why: Why = Why.NONE, text: str = "") -> None:
        """The one way the state changes: checked against the transition table."""
        check_transition(self.state, state)
        self.state, self.why, self.reason = state, why, text

    @property
    def why_now(self) -> Reason:
        """The structured reason: kind, words and (backoff) when the next start is due."""
        return Reason(self.why, self.reason, self.next_try_at if self.state is State.BACKOFF else None)

    # -- events ---------------------------------------------------------------------------
    def spawned(self, now: float) -> None:
        # stopped/backoff -> starting: a fresh server process exists.
        self._to(State.STARTING)
        self.started_at, self.ready_at, self.next_try_at = now, None, None
        self.failures, self.health = 0, None

    def adopted(self, started_at: float) -> None:
        # stopped -> starting: a server whose keeper died, watched by a new keeper. It ran
        # before, so a death now is a crash (backoff), not a bad start (failed).
        self.spawned(started_at)
        self.ever_ready = True

    def cannot_start(self, text: str, now: float) -> None:
        # stopped/backoff -> failed: the program could not be started at all (no process).
        self.exit_code, self.exit_signal, self.health = 127, None, None
        if self.state is State.BACKOFF:
            self._to(State.STARTING)
        self._to(State.FAILED, Why.CANNOT_START, text)

    def health_result(self, result: Health, now: float) -> None:
        self.health = result
        if self.state is State.STARTING:
            if result is Health.OK:
                # starting -> running: the engine answers 200 on its health endpoint.
                self._to(State.RUNNING)
                self.ready_at, self.ever_ready = now, True
            # 503 (loading) and no answer keep it starting; the start timeout bounds the wait.
            return
        if self.state not in (State.RUNNING, State.UNHEALTHY):
            return
        if result is Health.DOWN:
            self.failures += 1
            if self.failures >= self.policy.health_failures and self.state is State.RUNNING:
                # running -> unhealthy: K probes in a row failed while the process lives.
                self._to(State.UNHEALTHY, Why.UNHEALTHY, f"{self.failures} health checks failed in a row")
            return
        # unhealthy -> running: a probe succeeded again (503 counts: the engine answers).
        self.failures = 0
        if self.state is State.UNHEALTHY:
            self._to(State.RUNNING)

    def exited(self, code: int | None, signal: int | None, now: float, cause: str = "") -> None:
        """The server process ended (``cause``: what else is known, e.g. a container's OOM kill)."""
        self.exit_code, self.exit_signal, self.health = code, signal, None
        how = exit_words(code, signal)  # SIGILL is named with its cause
        if cause:
            how = f"{cause}; {how}"
        if self.stopping:
            # any -> stopped: we asked it to stop.
            self._to(State.STOPPED, Why.REQUESTED, "stopped on request")
            return
        if self.state is State.STARTING and not self.ever_ready:
            # starting -> failed: it died before ever answering health (bad flags, model...):
            # retrying would only repeat the failure, so fail fast and let `up` report it.
            self._to(State.FAILED, Why.START_EXIT, f"{how} while starting")
            return
        if self.state in TERMINAL:
            return  # already given up (start timeout): the exit of the stopped tree adds nothing
        clean = code == 0 and not signal
        if code in self.policy.fatal_codes:
            # running -> failed: the exit code says the configuration is wrong; retrying won't help.
            self._to(State.FAILED, Why.CONFIG, f"{how} (a configuration error: not restarted)")
            return
        if self.policy.restart == "no" or (self.policy.restart == "on-failure" and clean):
            # running -> stopped/failed: the policy does not restart.
            self._to(State.STOPPED if clean else State.FAILED, Why.EXITED, how)
            return
        self._crashed(how, now)

    def _crashed(self, how: str, now: float) -> None:
        if self.ready_at is not None and now - self.ready_at >= self.policy.stable_after:
            self.quick_deaths = 0  # it ran long enough: start the backoff afresh
        self.quick_deaths += 1
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.policy.crash_window:
            self.deaths.popleft()
        if len(self.deaths) >= self.policy.crash_limit:
            # running -> failed: crash loop; no endless retries.
            self._to(State.FAILED, Why.CRASH_LOOP, f"crash loop: died {len(self.deaths)} times within "
                                                   f"{self.policy.crash_window:.0f}s (last: {how})")
            return
        # running/unhealthy -> backoff: restart later, delay doubling up to the cap.
        delay = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (self.quick_deaths - 1))
        self._to(State.BACKOFF, Why.RESTARTING, how)
        self.next_try_at = now + delay

    def restarted_unhealthy(self, code: int | None, signal: int | None, now: float) -> None:
        # unhealthy -> backoff: we stopped it to restart it (`restart_unhealthy`).
        self.exited(code, signal, now)
        if self.state is State.BACKOFF:
            self.reason = f"restarted after turning unhealthy; {self.reason}"

    def stop_requested(self) -> None:
        self.stopping = True
        if self.state is State.BACKOFF:
            # backoff -> stopped: nothing is running, cancel the scheduled start.
            self._to(State.STOPPED, Why.REQUESTED, "stopped on request")
            self.next_try_at = None

    def killed_for_timeout(self) -> None:
        # starting -> failed: the start timeout ran out and the tree was stopped.
        self._to(State.FAILED, Why.START_TIMEOUT,
                 f"start timeout: no healthy answer within {self.policy.start_timeout:.0f}s")

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
