"""The states of a server under llmctl, their named groups, the transitions between them, and
why a server is in its state. One vocabulary for the keeper, `status`, `up`/`down`, the router
and the gateway; this module imports nothing of llmctl.

    stopped    not running: never started, stopped on request, or exited cleanly under
               `restart: on-failure`
    starting   server spawned, health not yet 200 (llama-server answers 503 while loading)
    running    health answered 200; probed every health_interval
    unhealthy  running, but the last `health_failures` probes failed
    backoff    the server died; the next start is scheduled (restart policy)
    failed     given up: died while first starting, start timeout, crash loop, or policy `no`
    unreachable  status only, of a remote profile (``engine: remote``, a server llmctl does not
               start): its probe got no 200. No keeper, so no machine ever enters or leaves it;
               a remote server that answers is ``running``
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    FAILED = "failed"
    UNREACHABLE = "unreachable"  #: a remote server that did not answer its probe (status only)

    def __str__(self) -> str:
        return self.value


#: a server process exists (the keeper probes its health)
PROCESS_ALIVE = frozenset({State.STARTING, State.RUNNING, State.UNHEALTHY})
#: a keeper is at work on it: `up` says "already running", `down` has something to stop
LIVE = PROCESS_ALIVE | {State.BACKOFF}
#: it answered its health check: `up` counts it as started, `status` shows its uptime
STARTED = frozenset({State.RUNNING, State.UNHEALTHY})
#: it takes requests: `run`'s router, `tasks list`, `embed`
READY = frozenset({State.RUNNING})
#: no keeper works on it: the keeper is done with it (or, a remote server, there never is one)
TERMINAL = frozenset({State.STOPPED, State.FAILED, State.UNREACHABLE})

#: every transition a keeper's state machine may make (a state may also stay as it is)
TRANSITIONS: dict[State, frozenset[State]] = {
    # a spawn (or an adopted server); a start that fails before a process exists
    State.STOPPED: frozenset({State.STARTING, State.FAILED}),
    # health 200; died while starting (failed) or after having been ready (adopted: backoff);
    # start timeout (failed); stop requested (stopped)
    State.STARTING: frozenset({State.RUNNING, State.FAILED, State.BACKOFF, State.STOPPED}),
    # K failed probes; died (backoff, or failed/stopped by policy or a crash loop); stop
    State.RUNNING: frozenset({State.UNHEALTHY, State.BACKOFF, State.FAILED, State.STOPPED}),
    # a probe succeeded again; died or was restarted; stop
    State.UNHEALTHY: frozenset({State.RUNNING, State.BACKOFF, State.FAILED, State.STOPPED}),
    # the next spawn; a stop request cancels it
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED}),
    State.FAILED: frozenset(),
    State.UNREACHABLE: frozenset(),  # status' word for a remote server: no machine reaches or leaves it
}


class IllegalTransition(RuntimeError):
    """A state machine was asked for a transition the table does not allow: a bug in llmctl."""


def check_transition(src: State, dst: State) -> None:
    """Raise :class:`IllegalTransition` unless ``src -> dst`` is in :data:`TRANSITIONS`."""
    if dst is not src and dst not in TRANSITIONS[src]:
        raise IllegalTransition(f"a server cannot go from {src.value} to {dst.value}")


class Why(str, enum.Enum):
    """The kind of reason a server is in its state: what code branches on (the text is for people)."""

    NONE = ""
    REQUESTED = "requested"  #: stopped on request
    EXITED = "exited"  #: exited, and the policy does not restart it
    START_EXIT = "start-exit"  #: died before it ever answered its health check
    CONFIG = "config"  #: an exit code that means "wrong command line or install"
    CRASH_LOOP = "crash-loop"  #: died crash_limit times within crash_window
    RESTARTING = "restarting"  #: died; the next start is scheduled
    START_TIMEOUT = "start-timeout"  #: no healthy answer within start_timeout
    UNHEALTHY = "unhealthy"  #: health checks failed in a row
    CANNOT_START = "cannot-start"  #: the program could not be started at all
    KEEPER_GONE = "keeper-gone"  #: the keeper died (status' view)
    REBOOTED = "rebooted"  #: the record is from another boot (status' view)


@dataclass(frozen=True)
class Reason:
    """Why a server is in its state: a kind to branch on, words for people, and for
    ``backoff`` when the next start is due (monotonic seconds)."""

    kind: Why = Why.NONE
    text: str = ""
    next_try_at: float | None = None

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.text)


def backoff_note(text: str, seconds_left: float) -> str:
    """`status`'s words for a server in backoff, counted down to the next start as of now."""
    left = f"restarting in {max(0.0, seconds_left):.0f}s"
    return f"{text}; {left}" if text else left
