"""Supervisor behaviour with a purpose-built misbehaving server (tests/helpers): it produces
on cue the faults a real llama-server will not (never ready, crash, ignore SIGTERM, forks)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmctl.errors import PortInUse, StartFailed, StartTimeout
from llmctl.supervise.control import Supervisor
from llmctl.supervise.spec import LaunchSpec

from .util import port_is_free

HELPER = str(Path(__file__).parent / "helpers" / "misbehaving_server.py")


def spec(name: str, port: int, *flags: str, **kw) -> LaunchSpec:
    kw.setdefault("start_timeout", 15)
    kw.setdefault("stop_timeout", 2)
    return LaunchSpec(name=name, engine="test", argv=[sys.executable, HELPER, "--port", str(port), *flags],
                      env={}, host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}", **kw)


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_waits_through_503_and_stops_whole_tree(ports):
    port = ports()
    sup = Supervisor()
    [res] = sup.launch([spec("a", port, "--ready-after", "0.8", "--fork-child", "--setsid-child")])
    assert res.outcome == "started" and res.seconds >= 0.8
    [st] = sup.status(["a"])
    assert st.state == "running" and st.health == "ok" and st.supervised
    server = psutil.Process(st.pid)
    wait_for(lambda: len(json.loads(Path(st.log).with_name("..").resolve().joinpath(
        "state", "a.json").read_text())["members"]) == 2, what="members recorded")
    tree = [server] + server.children(recursive=True)
    escaped = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1001"]]
    assert len(tree) >= 2 and escaped
    [stop] = sup.stop(["a"])
    assert stop.outcome == "stopped"
    for p in tree + escaped:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    assert port_is_free(port)
    assert sup.status(["a"])[0].state == "stopped"
    assert sup.stop(["a"])[0].outcome == "not-running"  # idempotent


def test_sigkill_after_stop_timeout_when_sigterm_ignored(ports):
    port = ports()
    sup = Supervisor()
    sup.launch([spec("stubborn", port, "--ignore-term", stop_timeout=1)])
    pid = sup.status(["stubborn"])[0].pid
    t0 = time.monotonic()
    sup.stop(["stubborn"])
    assert 0.9 <= time.monotonic() - t0 < 8
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "stop requested" in Path(sup.paths.log_file("stubborn")).read_text()


def test_never_ready_hits_start_timeout_and_leaves_nothing(ports):
    port = ports()
    sup = Supervisor()
    with pytest.raises(StartTimeout) as ei:
        sup.launch([spec("slow", port, "--never-ready", start_timeout=1.5)])
    assert "start timeout" in ei.value.message and "misbehaving server pid" in ei.value.detail
    assert sup.status(["slow"])[0].state == "failed"
    assert port_is_free(port)


def test_exit_while_starting_fails_fast_with_log_tail(ports):
    port = ports()
    sup = Supervisor()
    t0 = time.monotonic()
    with pytest.raises(StartFailed) as ei:
        sup.launch([spec("bad", port, "--exit-now", "3")])
    assert time.monotonic() - t0 < 5
    assert "exited with code 3 while starting" in ei.value.message
    assert "exiting at once" in ei.value.detail
    [st] = sup.status(["bad"])
    assert st.state == "failed" and st.exit_code == 3


def test_crash_after_ready_is_restarted_with_backoff(ports):
    port = ports()
    sup = Supervisor()
    sup.launch([spec("crashy", port, "--crash-after", "0.5", "--exit-code", "7")])
    first = sup.status(["crashy"])[0].pid
    st = wait_for(lambda: (s := sup.status(["crashy"])[0]).restarts >= 1 and s.state == "running" and s,
                  what="restart")
    assert st.pid != first and st.exit_code == 7
    sup.stop(["crashy"])


def test_killed_server_shows_signal_and_comes_back(ports):
    port = ports()
    sup = Supervisor()
    sup.launch([spec("victim", port)])
    pid = sup.status(["victim"])[0].pid
    os.kill(pid, signal.SIGKILL)
    st = wait_for(lambda: (s := sup.status(["victim"])[0]).state == "backoff" and s, what="backoff")
    assert st.exit_signal == signal.SIGKILL and st.next_try_in_s is not None
    st = wait_for(lambda: (s := sup.status(["victim"])[0]).state == "running" and s.restarts == 1 and s,
                  what="restart")
    assert st.pid != pid
    sup.stop(["victim"])


def test_foreign_port_holder_refused_before_spawn(ports):
    import socket

    port = ports()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        sup = Supervisor()
        with pytest.raises(PortInUse) as ei:
            sup.launch([spec("clash", port)])
    assert f"pid {os.getpid()}" in ei.value.message
    assert not sup.paths.state_file("clash").exists()  # nothing was spawned


def test_two_launches_at_once_start_exactly_one_server(ports):
    """Two `up` racing: the kernel lock lets exactly one keeper start a server."""
    import threading

    port = ports()
    results, errors = [], []

    def go():
        try:
            results.extend(Supervisor().launch([spec("race", port, "--ready-after", "0.3")]))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    servers = [p for p in psutil.process_iter(["cmdline"])
               if p.info["cmdline"] and HELPER in p.info["cmdline"] and str(port) in p.info["cmdline"]]
    assert len(servers) == 1, (results, errors)
    assert not errors, errors
    assert sorted(r.outcome for r in results) == ["already-running", "started"]
    Supervisor().stop(["race"])


def test_corrupt_state_file_is_moved_aside(ports):
    sup = Supervisor()
    sup.paths.ensure()
    sup.paths.state_file("junk").write_text("{not json")
    [st] = sup.status(["junk"])
    assert st.state == "stopped"
    assert sup.paths.state_file("junk").with_name("junk.json.corrupt").exists()


def test_state_dir_is_private():
    sup = Supervisor()
    sup.paths.ensure()
    for d in (sup.paths.state, sup.paths.run, sup.paths.logs):
        assert d.stat().st_mode & 0o777 == 0o700
