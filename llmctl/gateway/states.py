"""The gateway's view of one profile's server: its states, their named group, and the table of
allowed transitions. Imports only the supervisor's states (which import nothing): the pool and
the policy both read it.

The gateway keeps its own states, not the supervisor's: it must know a start or a stop it asked
for is under way (``starting``, ``stopping``) before the supervisor's files say so, and it reads
every supervisor state that means "the keeper is bringing it back" as ``recovering``::

    stopped --request--> starting --healthy--> running --idle TTL / swap / budget--> stopping --> stopped
    starting --start fails--> failed    (answers 503 with the reason; retried after a pause)
    running --its keeper restarts it--> recovering --healthy--> running
    any but starting/stopping --seen by refresh (llmctl up/down elsewhere)--> what the supervisor says
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from ..supervise.states import State


class GatewayState(str, Enum):
    """A string too (it equals its value, JSON writes it as one), so readers of a record's state
    and of ``/v1/models`` see the words they always saw."""

    STOPPED = "stopped"  #: no server (or one the gateway need not know of)
    STARTING = "starting"  #: the gateway asked for a start and waits for it to be healthy
    RUNNING = "running"  #: healthy: requests are admitted
    STOPPING = "stopping"  #: the gateway asked for a stop (idle TTL, swap, budget)
    RECOVERING = "recovering"  #: its keeper is restarting it (crash, backoff)
    FAILED = "failed"  #: a start or a stop failed; ``reason`` says why

    def __str__(self) -> str:  # the word, in logs and messages, on every Python version
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


S = GatewayState

#: states in which a server holds (or is about to hold, or still holds) its memory: a swap or
#: the budget must stop it before another takes its place
HOLDS_MEMORY = frozenset({S.STARTING, S.RUNNING, S.STOPPING, S.RECOVERING})

#: the supervisor's states as the gateway reads them (any other: stopped); keyed by str too
FROM_SUPERVISOR: Mapping[str, GatewayState] = {
    State.RUNNING: S.RUNNING, State.UNHEALTHY: S.RUNNING, State.STARTING: S.RECOVERING,
    State.BACKOFF: S.RECOVERING, State.STOPPED: S.STOPPED, State.FAILED: S.FAILED,
    State.UNREACHABLE: S.FAILED}  # a remote server: tried again after serve's retry pause

#: every transition the pool makes, each with who makes it. A refresh (the supervisor's view:
#: ``llmctl up/down`` elsewhere, a crash, a keeper's restart) may move a record that is neither
#: starting nor stopping to any state the supervisor can report.
TRANSITIONS: dict[GatewayState, frozenset[GatewayState]] = {
    # a request starts it; a refresh sees it started elsewhere
    S.STOPPED: frozenset({S.STARTING, S.RUNNING, S.RECOVERING, S.FAILED}),
    # healthy; the start failed; the gateway's shutdown stopped it first
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.STOPPED}),
    # idle TTL, swap or budget; a refresh (crash, keeper restart, `down`); shutdown
    S.RUNNING: frozenset({S.STOPPING, S.RECOVERING, S.STOPPED, S.FAILED}),
    # the stop ended; processes survived it
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    # a refresh sees it healthy again, given up or stopped; shutdown
    S.RECOVERING: frozenset({S.RUNNING, S.STOPPED, S.FAILED}),
    # a request retries the start; a refresh sees it started elsewhere; shutdown
    S.FAILED: frozenset({S.STARTING, S.RUNNING, S.RECOVERING, S.STOPPED}),
}


class IllegalTransition(RuntimeError):
    """A transition the table does not allow: a bug in the gateway, never a user's mistake."""


def check_transition(old: GatewayState, new: GatewayState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in :data:`TRANSITIONS`; ``new``
    must be a :class:`GatewayState` (a string that spells one is refused too)."""
    if not isinstance(new, GatewayState):
        raise IllegalTransition(f"{new!r} is not a GatewayState")
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old} -> {new} is not an allowed transition")
