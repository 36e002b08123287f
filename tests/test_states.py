"""The state vocabulary (llmctl/supervise/states.py) read as a specification: the groups, the
transition table, and a machine that refuses a transition the table does not allow."""

from __future__ import annotations

import pytest

from llmctl.supervise.machine import Health, Machine, Policy
from llmctl.supervise.states import (
    LIVE,
    PROCESS_ALIVE,
    READY,
    STARTED,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    State,
    Why,
    backoff_note,
    check_transition,
)


def test_the_groups_nest_as_their_names_say():
    assert READY <= STARTED <= PROCESS_ALIVE <= LIVE
    assert LIVE.isdisjoint(TERMINAL) and LIVE | TERMINAL == set(State)
    assert State.BACKOFF in LIVE and State.BACKOFF not in PROCESS_ALIVE  # a keeper, no process
    assert State.UNHEALTHY in STARTED and State.UNHEALTHY not in READY  # answered once, not now


def test_states_compare_and_hash_as_their_words():
    """State files and JSON hold the words; the groups must find them."""
    assert "running" in READY and "backoff" in LIVE and State("failed") is State.FAILED
    assert {State.RUNNING: 1}["running"] == 1


def test_the_transition_table():
    assert TRANSITIONS[State.FAILED] == frozenset()  # given up: a new keeper starts afresh
    check_transition(State.BACKOFF, State.BACKOFF)  # staying is always allowed
    for src, dst in [(State.BACKOFF, State.RUNNING), (State.FAILED, State.STARTING),
                     (State.STOPPED, State.RUNNING), (State.UNHEALTHY, State.STARTING)]:
        with pytest.raises(IllegalTransition, match=f"from {src.value} to {dst.value}"):
            check_transition(src, dst)


def test_a_machine_refuses_an_illegal_transition():
    m = Machine(Policy(restart="always"))
    m.spawned(0)
    m.health_result(Health.OK, 1)
    m.exited(None, 9, 2)
    assert m.state is State.BACKOFF and m.why is Why.RESTARTING
    with pytest.raises(IllegalTransition):
        m._to(State.RUNNING)  # backoff -> running: there is no process to be running
    m.stop_requested()
    assert m.state is State.STOPPED and m.why is Why.REQUESTED


def test_reasons_carry_their_kind_and_when_the_next_try_is():
    m = Machine(Policy(restart="always", backoff_base=4))
    m.spawned(0)
    m.health_result(Health.OK, 1)
    m.exited(None, 9, 10)
    r = m.why_now
    assert r.kind is Why.RESTARTING and r.next_try_at == 14 and str(r) == "killed by signal 9"
    assert backoff_note(r.text, 3.4) == "killed by signal 9; restarting in 3s"
    m2 = Machine(Policy(start_timeout=5))
    m2.spawned(0)
    m2.killed_for_timeout()
    assert m2.why is Why.START_TIMEOUT and m2.why_now.next_try_at is None
    m3 = Machine(Policy())
    m3.cannot_start("cannot start /x: No such file", 0)
    assert m3.state is State.FAILED and m3.why is Why.CANNOT_START and m3.exit_code == 127
