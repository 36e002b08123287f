"""The keeper's state machine, driven by an injected clock (no processes, no sleeping)."""

from __future__ import annotations

from llmctl.supervise.machine import Action, Health, Machine, Policy, State


def running(policy: Policy | None = None, t: float = 0.0) -> Machine:
    m = Machine(policy or Policy())
    m.spawned(t)
    m.health_result(Health.OK, t + 1)
    assert m.state is State.RUNNING
    return m


def test_503_while_loading_is_starting_then_200_is_running():
    m = Machine(Policy())
    m.spawned(0)
    m.health_result(Health.DOWN, 0.1)  # not listening yet
    m.health_result(Health.LOADING, 0.5)  # llama-server's 503 while loading
    assert m.state is State.STARTING
    m.health_result(Health.OK, 1.0)
    assert m.state is State.RUNNING and m.ready_at == 1.0


def test_start_timeout_asks_for_kill_then_fails():
    m = Machine(Policy(start_timeout=10))
    m.spawned(100)
    assert m.tick(105) is Action.NONE
    assert m.tick(110.5) is Action.KILL
    m.killed_for_timeout()
    assert m.state is State.FAILED and m.reason.startswith("start timeout")


def test_exit_while_first_starting_fails_fast_without_retry():
    m = Machine(Policy(restart="always"))
    m.spawned(0)
    m.exited(1, None, 0.3)
    assert m.state is State.FAILED and "while starting" in m.reason
    assert m.tick(100) is Action.NONE


def test_crash_backs_off_with_doubling_delay_capped():
    m = running(Policy(backoff_base=1, backoff_cap=4, crash_limit=100))
    delays = []
    t = 2.0
    for _ in range(5):
        m.exited(None, 9, t)
        assert m.state is State.BACKOFF
        delays.append(m.next_try_at - t)
        assert m.tick(m.next_try_at - 0.01) is Action.NONE
        assert m.tick(m.next_try_at) is Action.SPAWN
        t = m.next_try_at
        m.spawned(t)
        m.health_result(Health.OK, t + 0.1)
        t += 0.5
    assert delays == [1, 2, 4, 4, 4]
    assert m.restarts == 5 and m.exit_signal == 9


def test_stable_run_resets_backoff():
    m = running(Policy(backoff_base=1, stable_after=60))
    m.exited(None, 9, 5)
    m.tick(m.next_try_at)
    m.spawned(6)
    m.health_result(Health.OK, 7)
    m.exited(None, 9, 200)  # ran 193 s: stable
    assert m.next_try_at - 200 == 1


def test_crash_loop_ends_in_failed():
    m = running(Policy(crash_limit=3, crash_window=60, backoff_base=1))
    t = 2.0
    for _ in range(3):
        m.exited(1, None, t)
        if m.state is State.FAILED:
            break
        t = m.next_try_at
        assert m.tick(t) is Action.SPAWN
        m.spawned(t)
        m.health_result(Health.OK, t + 0.1)
        t += 0.2
    assert m.state is State.FAILED and "crash loop" in m.reason


def test_policy_no_and_clean_exit_under_on_failure():
    m = running(Policy(restart="no"))
    m.exited(None, 9, 10)
    assert m.state is State.FAILED
    m = running(Policy(restart="on-failure"))
    m.exited(0, None, 10)
    assert m.state is State.STOPPED
    m = running(Policy(restart="always"))
    m.exited(0, None, 10)
    assert m.state is State.BACKOFF


def test_k_failed_probes_make_unhealthy_and_recovery_clears_it():
    m = running(Policy(health_failures=3))
    m.health_result(Health.DOWN, 10)
    m.health_result(Health.DOWN, 15)
    assert m.state is State.RUNNING
    m.health_result(Health.DOWN, 20)
    assert m.state is State.UNHEALTHY and "3 health checks" in m.reason
    m.health_result(Health.LOADING, 25)  # the engine answers again
    assert m.state is State.RUNNING and m.failures == 0


def test_stop_request_wins_over_restart():
    m = running()
    m.stop_requested()
    m.exited(None, 15, 10)
    assert m.state is State.STOPPED
    m = running()
    m.exited(None, 9, 10)
    assert m.state is State.BACKOFF
    m.stop_requested()
    assert m.state is State.STOPPED and m.tick(1000) is Action.NONE


def test_clock_never_goes_backwards_in_decisions():
    # timers use the monotonic clock; a start at t=100 is never "timed out" by an earlier now
    m = Machine(Policy(start_timeout=1))
    m.spawned(100)
    assert m.tick(50) is Action.NONE


def test_configuration_error_exit_codes_are_not_retried():
    """Exit 2 (bad flag), 126 (not executable), 127 (not found) after running: failed at once,
    whatever the restart policy; any other code backs off."""
    for code in (2, 126, 127):
        m = running(Policy(restart="always"))
        m.exited(code, None, 5.0)
        assert m.state is State.FAILED and "configuration error" in m.reason and m.tick(100) is Action.NONE
    m = running(Policy(restart="always"))
    m.exited(1, None, 5.0)
    assert m.state is State.BACKOFF
