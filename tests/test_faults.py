"""Supervisor behaviour with a purpose-built misbehaving server (tests/helpers): it produces
on cue the faults a real llama-server will not (never ready, crash, ignore SIGTERM, forks)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from llmctl.errors import PortInUse, StartFailed, StartTimeout
from llmctl.supervise.control import Supervisor
from llmctl.supervise.identity import ProcId
from llmctl.supervise.spec import LaunchSpec

from .util import can_freeze, frozen, port_is_free, wait_for

HELPER = str(Path(__file__).parent / "helpers" / "misbehaving_server.py")


def mine(p: psutil.Process) -> bool:
    """Started under this test's LLMCTL_HOME (keepers pass their environment down), so that a
    test run beside this one cannot confuse the scans below."""
    try:
        return p.environ().get("LLMCTL_HOME") == os.environ["LLMCTL_HOME"]
    except psutil.Error:
        return False


def spec(name: str, port: int, *flags: str, **kw) -> LaunchSpec:
    kw.setdefault("start_timeout", 15)
    kw.setdefault("stop_timeout", 2)
    return LaunchSpec(name=name, engine="test", argv=[sys.executable, HELPER, "--port", str(port), *flags],
                      env={}, host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}", **kw)


def term_then_kill(log: Path) -> float:
    """From a log of the misbehaving server run with --ignore-term: check that it got (and
    ignored) a SIGTERM while alive; return how long it lived on after it (its last "alive" line)."""
    lines = log.read_text().splitlines()
    assert "got SIGTERM; ignoring it" in lines, "no SIGTERM reached the server"
    after = lines[lines.index("got SIGTERM; ignoring it"):]
    alive = [float(m.group(1)) for ln in after if (m := re.fullmatch(r"alive ([\d.]+)s after SIGTERM", ln))]
    return max(alive, default=0.0)


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
    escaped = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1001"] and mine(p)]
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
    assert term_then_kill(Path(sup.paths.log_file("stubborn"))) >= 0.5  # TERM, then KILL a second later


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


def test_keeper_failing_between_state_read_and_lock_check_keeps_its_reason(ports, monkeypatch):
    """The gap between reading a server's state and finding its lock free is widened on purpose
    (a lock check that first sleeps), so the keeper writes `failed` and exits inside it: `up` and
    `status` must still report the keeper's own reason, never "exited unexpectedly" (a CI run on a
    loaded machine once hit this gap unaided)."""
    import llmctl.supervise.starting as starting
    import llmctl.supervise.status as status

    real = starting.is_held

    def slow_is_held(path):
        time.sleep(0.3)
        return real(path)

    monkeypatch.setattr(starting, "is_held", slow_is_held)  # the start protocol's lock checks
    monkeypatch.setattr(status, "is_held", slow_is_held)
    sup = Supervisor()
    with pytest.raises(StartFailed) as ei:
        sup.launch([spec("gap", ports(), "--exit-now", "3")])
    assert "exited with code 3 while starting" in ei.value.message
    [st] = sup.status(["gap"])
    assert st.state == "failed" and st.exit_code == 3 and "exited with code 3" in st.message


def test_crash_after_ready_is_restarted_with_backoff(ports):
    port = ports()
    sup = Supervisor()
    sup.launch([spec("crashy", port, "--crash-after", "2", "--exit-code", "7")])  # ready well before
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


# ---------------------------------------------------------------------------------------------
# The fault cases of DESIGN.md through the real CLI. The misbehaving server stands in for the
# engine via the profile's `binary:` (it accepts llama-server's command line) so that each fault
# happens on cue; cases where the real engine matters use llama-server (test_engine_lifecycle.py).
# ---------------------------------------------------------------------------------------------

from .util import cli  # noqa: E402


def fault_profiles(tmp_path: Path, port: int, misbehave: str = "", name: str = "srv", **keys) -> dict:
    model = tmp_path / "dummy.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    settings = {"model": str(model), "port": port, "binary": HELPER, "env": f'{{MISBEHAVE: "{misbehave}"}}',
                "stop_timeout": 2, "start_timeout": 20, **keys}
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"profiles:\n  {name}:\n" + "".join(f"    {k}: {v}\n" for k, v in settings.items()))
    return {"LLMCTL_PROFILES": str(f)}


def status_of(env: dict, name: str = "srv") -> dict:
    r = cli("status", name, "--json", env=env)
    return json.loads(r.stdout)[0]


def helper_procs(port: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(HELPER in c for c in cmd) and str(port) in cmd:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
    return out


def keeper_gone(name: str = "srv") -> bool:
    """The keeper recorded in NAME's state has exited (or is a zombie)."""
    st = json.loads((Path(os.environ["LLMCTL_HOME"]) / "state" / f"{name}.json").read_text())
    try:
        return psutil.Process(st["keeper_pid"]).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def recorded_members(name: str = "srv") -> set[int]:
    try:
        st = json.loads((Path(os.environ["LLMCTL_HOME"]) / "state" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return set()  # being replaced
    return {m[0] for m in st.get("members") or []}


def sleepers() -> list[psutil.Process]:
    """The misbehaving server's children of this test (--fork-child, --setsid-child)."""
    return [p for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] in (["sleep", "1000"], ["sleep", "1001"]) and mine(p)]


def test_fault_01_sigkilled_server_shows_signal_and_restarts(tmp_path, ports):
    """Fault 1: server SIGKILLed -> state shows the signal, restarted after a backoff."""
    port = ports()
    env = fault_profiles(tmp_path, port, restart_delay=3)  # backoff lasts long enough to be seen
    assert cli("up", "srv", env=env).returncode == 0
    pid = status_of(env)["pid"]
    os.kill(pid, signal.SIGKILL)
    st = wait_for(lambda: (s := status_of(env))["state"] == "backoff" and s, what="backoff")
    assert st["exit_signal"] == 9 and st["next_try_in_s"] is not None and "restarting in" in st["message"]
    st = wait_for(lambda: (s := status_of(env))["state"] == "running" and s["restarts"] == 1 and s)
    assert st["pid"] != pid
    assert cli("down", "srv", env=env).returncode == 0


def test_fault_02_crash_loop_ends_failed_with_log_lines(tmp_path, ports):
    """Fault 2: a crash loop ends in `failed` after crash_limit quick deaths, with the last
    log lines in status; no endless retries."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--crash-after 1.5 --exit-code 9", restart_delay=0.1, crash_limit=3)
    assert cli("up", "srv", env=env).returncode == 0
    st = wait_for(lambda: (s := status_of(env))["state"] == "failed" and s, timeout=30, what="failed")
    assert "crash loop" in st["message"] and st["restarts"] == 2 and st["exit_code"] == 9
    assert any("crashing with code 9" in line for line in st["log_tail"])
    wait_for(keeper_gone, what="the keeper's exit")  # nothing is left to retry
    assert status_of(env)["restarts"] == 2 and not helper_procs(port)
    r = cli("status", "srv", env=env)
    assert r.returncode == 3 and "crashing with code 9" in r.stderr


def test_a_server_stopped_for_its_start_timeout_keeps_how_it_ended(tmp_path, ports):
    """The stop that follows a start timeout waits on the server, and so reaps it: the status it
    ended with (SIGKILL here: it ignores SIGTERM) must still reach the state, not be lost."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--never-ready --ignore-term", start_timeout=1.5, stop_timeout=1)
    assert cli("up", "srv", env=env).returncode == 9
    st = status_of(env)
    assert st["state"] == "failed" and st["exit_signal"] == signal.SIGKILL and st["exit_code"] is None


def test_fault_03_never_healthy_term_then_kill(tmp_path, ports):
    """Fault 3: never healthy and deaf to SIGTERM -> start timeout, TERM then KILL, failed. The
    server logs the SIGTERM it ignored, then that it is still alive every 50 ms: the KILL came
    after the TERM and not before most of stop_timeout had passed (a stop that sends KILL
    alone, or both at once, fails here)."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--never-ready --ignore-term", start_timeout=1.5, stop_timeout=1)
    r = cli("up", "srv", env=env)
    assert r.returncode == 9 and "start timeout" in r.stderr
    st = status_of(env)
    assert st["state"] == "failed" and not helper_procs(port) and port_is_free(port)
    assert term_then_kill(Path(os.environ["LLMCTL_HOME"]) / "logs" / "srv.log") >= 0.5


def test_fault_04_unhealthy_after_k_failures_and_restart_if_asked(tmp_path, ports):
    """Fault 4: alive but failing health K times -> unhealthy; with restart_unhealthy, restarted."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--fail-health-after 1", health_interval=0.2, health_failures=3)
    assert cli("up", "srv", env=env).returncode == 0
    st = wait_for(lambda: (s := status_of(env))["state"] == "unhealthy" and s, what="unhealthy")
    assert "3 health checks failed" in st["message"] and st["pid"] and st["restarts"] == 0
    assert cli("down", "srv", env=env).returncode == 0
    env = fault_profiles(tmp_path, port, "--fail-health-after 1", health_interval=0.2, health_failures=2,
                         restart_unhealthy="true", restart_delay=0.2)
    assert cli("up", "srv", env=env).returncode == 0
    wait_for(lambda: status_of(env)["restarts"] >= 1, what="restart of the unhealthy server")
    assert cli("down", "srv", env=env).returncode == 0


def test_fault_04b_503_while_loading_counts_as_starting(tmp_path, ports):
    """Fault 4 (second half): llama-server's 503 while loading is `starting`, not unhealthy."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--ready-after 2")
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "up", "srv"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    st = wait_for(lambda: (s := status_of(env))["health"] == "loading" and s, what="loading")
    assert st["state"] == "starting"
    assert proc.wait(30) == 0 and status_of(env)["state"] == "running"
    assert cli("down", "srv", env=env).returncode == 0


def test_fault_05_keeper_sigkilled_no_duplicate_and_controllable(tmp_path, ports):
    """Fault 5: keeper SIGKILLed -> the server lives on, `up` adopts it (no second server),
    and `down` stops it."""
    port = ports()
    env = fault_profiles(tmp_path, port)
    assert cli("up", "srv", env=env).returncode == 0
    home = Path(os.environ["LLMCTL_HOME"])
    state = json.loads((home / "state" / "srv.json").read_text())
    os.kill(state["keeper_pid"], signal.SIGKILL)
    wait_for(keeper_gone, what="keeper gone")
    st = status_of(env)
    assert st["state"] == "running" and not st["supervised"] and "unsupervised" in st["message"]
    r = cli("up", "srv", env=env)
    assert r.returncode == 0, r.stderr
    assert len(helper_procs(port)) == 1 and status_of(env)["pid"] == state["pid"]
    st = status_of(env)
    assert st["supervised"] and st["state"] == "running"
    # and once more without adoption: keeper killed, `down` alone stops the server
    state = json.loads((home / "state" / "srv.json").read_text())
    os.kill(state["keeper_pid"], signal.SIGKILL)
    wait_for(keeper_gone, what="keeper gone")
    r = cli("down", "srv", env=env)
    assert r.returncode == 0 and "stopped" in r.stdout
    assert not helper_procs(port) and port_is_free(port)


@pytest.mark.skipif(not can_freeze(), reason="needs root and a cgroup-v1 freezer to make a process outlive SIGKILL")
def test_fault_06_down_exits_10_when_a_process_survives_sigkill(tmp_path, ports):
    """Fault 6, end to end: a process of the server that SIGKILL cannot end makes `llmctl down`
    exit 10 (STOP_FAILED) naming it, after the keeper's stop and its own; once it can die,
    `down` succeeds. The survivor is real: the server's child frozen in a cgroup-v1 freezer,
    where, like a process hung in uninterruptible I/O, it outlives SIGKILL until thawed."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--fork-child", stop_timeout=0.5)
    assert cli("up", "srv", env=env).returncode == 0
    [child] = wait_for(sleepers, what="the server's child")
    wait_for(lambda: child.pid in recorded_members(), what="the child recorded as a member")
    with frozen(child.pid):
        t0 = time.monotonic()
        r = cli("down", "srv", env=env)
        assert r.returncode == 10, (r.stdout, r.stderr)
        assert f"processes survived SIGKILL: [{child.pid}]" in r.stderr and "llmctl status srv" in r.stderr
        assert child.status() == psutil.STATUS_DISK_SLEEP  # still there, not a zombie
        assert not helper_procs(port) and time.monotonic() - t0 < 60
        assert child.pid in recorded_members()  # still on record for the next `down`
    wait_for(lambda: not sleepers(), what="the thawed child's end (its SIGKILL was pending)")
    r = cli("down", "srv", env=env)
    assert r.returncode == 0, r.stderr
    assert status_of(env)["state"] == "stopped"


def test_fault_07_forking_server_leaves_nothing_via_cli(tmp_path, ports):
    """Fault 7: grandchildren (a child in the group, one escaped with setsid) -> none left."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--fork-child --setsid-child")
    assert cli("up", "srv", env=env).returncode == 0
    sleeps = wait_for(lambda: len(s := sleepers()) == 2 and s, what="both children")
    wait_for(lambda: {p.pid for p in sleeps} <= recorded_members(), what="both recorded as members")
    assert cli("down", "srv", env=env).returncode == 0
    assert not [p for p in sleeps if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_fault_08_reused_pid_never_signalled(tmp_path):
    """Fault 8: a state file naming a live stranger (wrong start time, or another owner) ->
    `down` never signals it."""
    stranger = subprocess.Popen(["sleep", "300"])
    other_owner = subprocess.Popen(["sleep", "301"], user=65534) if os.getuid() == 0 else None
    try:
        home = Path(os.environ["LLMCTL_HOME"])
        (home / "state").mkdir(parents=True, mode=0o700)
        ct = psutil.Process(stranger.pid).create_time()
        for name, pid, ctime in [("ghost", stranger.pid, ct - 100)] + (
                [("owned", other_owner.pid, psutil.Process(other_owner.pid).create_time())] if other_owner else []):
            (home / "state" / f"{name}.json").write_text(json.dumps(
                {"name": name, "state": "running", "pid": pid, "pid_create_time": ctime, "port": 1,
                 "keeper_pid": pid, "keeper_create_time": ctime, "members": [[pid, ctime]]}))
        r = cli("down", "--all")
        assert r.returncode == 0, r.stderr
        assert stranger.poll() is None and (other_owner is None or other_owner.poll() is None)
        assert status_of({}, "ghost")["state"] in ("stopped", "failed")
    finally:
        stranger.kill()
        stranger.wait()
        if other_owner:
            other_owner.kill()
            other_owner.wait()


def test_fault_08b_reused_pid_leading_a_new_group_keeps_its_group(tmp_path):
    """Fault 8, the group half: the recorded server is gone and its pid now belongs to a new
    process that leads a process group of its own. Neither it nor the members of its group are
    ever counted as ours (the group scan only runs while the pid is our leader's or free)."""
    from llmctl.supervise.stop import tree

    stranger = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True)
    try:
        wait_for(lambda: len(psutil.Process(stranger.pid).children()) == 2, what="the stranger's children")
        group = {p.pid for p in psutil.Process(stranger.pid).children()}
        assert all(os.getpgid(pid) == stranger.pid for pid in group)
        created = psutil.Process(stranger.pid).create_time()
        old_server = ProcId(stranger.pid, created - 100)  # same pid, recorded long before
        assert tree(old_server) == []
        # while the pid is our own leader's, its group is ours
        assert {p.pid for p in tree(ProcId(stranger.pid, created))} == group | {stranger.pid}
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_fault_09_corrupt_or_empty_state_while_running(tmp_path, ports):
    """Fault 9: a corrupt or empty state file is moved aside, never trusted; the keeper rewrites
    it; `down` still finds the keeper."""
    port = ports()
    env = fault_profiles(tmp_path, port)
    assert cli("up", "srv", env=env).returncode == 0
    state = Path(os.environ["LLMCTL_HOME"]) / "state" / "srv.json"
    state.write_text("")
    st = status_of(env)  # no crash
    assert st["state"] in ("starting", "running")
    wait_for(lambda: status_of(env)["state"] == "running", what="state rewritten by the keeper")
    state.write_text('{"name": "srv", "state": 42, "pid": "x"')
    r = cli("down", "srv", env=env)
    assert r.returncode == 0 and not helper_procs(port)


def test_one_up_keeps_its_servers_in_one_session_and_down_finds_each_keeper(tmp_path, ports):
    """The servers of one `up` share one new session (one scheduling group under Linux's
    sched_autogroup: separate sessions made two CPU servers load 2-4x slower on 2 cores), each
    in its own process group, under its own keeper. With its state file corrupt, `down a`
    still finds a's keeper among keepers that share a command line, and leaves b alone."""
    pa, pb = ports(), ports()
    model = tmp_path / "dummy.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "two.yaml"
    f.write_text("profiles:\n" + "".join(f"  {n}: {{model: {model}, port: {p}, binary: {HELPER}, stop_timeout: 2}}\n"
                                         for n, p in (("a", pa), ("b", pb))))
    env = {"LLMCTL_PROFILES": str(f)}
    assert cli("up", "a", "b", env=env).returncode == 0
    a, b = status_of(env, "a"), status_of(env, "b")
    assert os.getsid(a["pid"]) == os.getsid(b["pid"]) != os.getsid(0)
    assert os.getpgid(a["pid"]) == a["pid"] and os.getpgid(b["pid"]) == b["pid"]
    keepers = {n: psutil.Process(s["pid"]).ppid() for n, s in (("a", a), ("b", b))}
    assert keepers["a"] != keepers["b"]
    from llmctl.paths import Paths
    from llmctl.supervise.control import _keeper_of

    paths = Paths.from_env()
    for n in ("a", "b"):  # found without the state's record: by command line and the lock it holds
        assert _keeper_of(None, paths.lock_file(n)).pid == keepers[n]
    state = paths.state_file("a")
    state.write_text('{"name": "a", "state": 42')
    assert cli("down", "a", env=env).returncode == 0
    assert not helper_procs(pa)
    after = status_of(env, "b")
    assert after["state"] == "running" and after["pid"] == b["pid"]
    assert cli("down", "b", env=env).returncode == 0 and not helper_procs(pb)


def test_survivors_of_sigkill_stay_recorded_for_down(tmp_path, ports):
    """A process that outlives SIGKILL (a hung D-state process; one that cannot be produced on
    purpose here, so the keeper's stop is wrapped to report a live sleeper as the survivor) is
    kept in the state's members and named in the log, so `down` scans it and fails (exit 10)
    instead of reporting a clean stop."""
    from llmctl.supervise.keeper import Keeper
    from llmctl.supervise.osops import OsOps
    from llmctl.supervise.state import read_state

    port = ports()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        survivor = ProcId.of(sleeper.pid)

        class Ops(OsOps):
            def become_subreaper(self):  # not for the test process itself
                return False

            def stop(self, leader, members, timeout):
                return super().stop(leader, members, timeout) + [survivor]

        state, log = tmp_path / "srv.json", tmp_path / "srv.log"
        keeper = Keeper(spec("srv", port), state, log, Ops())
        t = threading.Thread(target=keeper.run)
        t.start()
        wait_for(lambda: (s := read_state(state, "srv")) and s.state == "running", what="running")
        keeper.stop_flag = True
        t.join(30)
        st = read_state(state, "srv")
        assert [m[0] for m in st.members] == [sleeper.pid]
        assert f"processes survived SIGKILL: {sleeper.pid}" in log.read_text()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_fault_10_stale_lock_and_state_do_not_block(tmp_path, ports):
    """Fault 10: a leftover lock file and a state saying `running` with dead pids: the kernel
    lock is free, so `up` proceeds; status does not believe the stale record."""
    port = ports()
    env = fault_profiles(tmp_path, port)
    home = Path(os.environ["LLMCTL_HOME"])
    for d in ("state", "run"):
        (home / d).mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / "run" / "srv.lock").write_text("12345\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "state" / "srv.json").write_text(json.dumps(
        {"name": "srv", "state": "running", "pid": dead.pid, "pid_create_time": 1.0, "port": port}))
    assert status_of(env)["state"] == "failed"
    r = cli("up", "srv", env=env)
    assert r.returncode == 0, r.stderr
    assert cli("down", "srv", env=env).returncode == 0


def test_fault_12_port_held_by_our_own_orphan(tmp_path, ports):
    """Fault 12: port held by llmctl's own orphaned server -> named as such; `down` stops it."""
    port = ports()
    env_a = fault_profiles(tmp_path, port, name="first")
    assert cli("up", "first", env=env_a).returncode == 0
    state = json.loads((Path(os.environ["LLMCTL_HOME"]) / "state" / "first.json").read_text())
    os.kill(state["keeper_pid"], signal.SIGKILL)
    env_b = fault_profiles(tmp_path, port, name="second")
    r = cli("up", "second", env=env_b)
    assert r.returncode == 7 and "llmctl's own server 'first'" in r.stderr and "llmctl down first" in r.stderr
    assert cli("down", "first", env=env_b).returncode == 0  # by its record, not its profile file
    assert port_is_free(port)


def test_fault_14_two_cli_ups_at_once_one_server(tmp_path, ports):
    """Fault 14: two `llmctl up` processes at once -> exactly one server."""
    port = ports()
    env = {**os.environ, **fault_profiles(tmp_path, port, "--ready-after 0.5")}
    procs = [subprocess.Popen([sys.executable, "-m", "llmctl", "up", "srv"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(helper_procs(port)) == 1
    assert sum("already running" in o for o, _ in outs) == 1
    assert cli("down", "srv", env=env).returncode == 0


def test_up_of_a_server_another_up_is_starting_waits_for_its_health(tmp_path, ports):
    """`up NAME` while an earlier `up` is still starting NAME: it starts nothing, waits for the
    health check like the first, and reports `already running` only once the server answers;
    if that server is crash-looping instead, it says so (not 0)."""
    port = ports()
    env = {**os.environ, **fault_profiles(tmp_path, port, "--ready-after 2")}
    first = subprocess.Popen([sys.executable, "-m", "llmctl", "up", "srv"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: status_of(env)["state"] == "starting" and status_of(env)["pid"], what="starting")
    second = cli("up", "srv", env=env)
    assert second.returncode == 0 and "already running" in second.stdout, second.stderr
    assert status_of(env)["state"] == "running"  # not before
    assert first.wait(timeout=60) == 0 and len(helper_procs(port)) == 1
    assert cli("down", "srv", env=env).returncode == 0

    env = {**os.environ, **fault_profiles(tmp_path, port, "--ready-after 0.2 --crash-after 2",
                                          restart_delay=30)}  # `down` cancels the backoff
    r = cli("up", "srv", env=env)
    assert r.returncode == 0, r.stderr  # ready well before it crashes
    wait_for(lambda: status_of(env)["state"] == "backoff", what="backoff")
    first = int(re.search(r"restarting in (\d+)s", cli("status", "srv", env=env).stdout).group(1))

    def counted_down():  # the table counts down to the next try
        table = cli("status", "srv", env=env).stdout
        return "backoff" not in table or int(re.search(r"restarting in (\d+)s", table).group(1)) <= first - 2

    wait_for(counted_down, timeout=20, what="the countdown")
    again = cli("up", "srv", env=env)
    assert again.returncode == 8 and "under the keeper of an earlier `up`" in again.stderr, again.stderr
    assert cli("down", "srv", env=env).returncode == 0 and not helper_procs(port)


def test_up_does_not_believe_the_last_runs_state_while_another_up_holds_the_lock(tmp_path, ports):
    """Another `up` holds NAME's lock but its keeper has not written a state yet: the state file
    still says what the last run ended with (`failed`, from a dead keeper). `up NAME` waits
    instead of reporting that; when the lock is let go without a server, it says so."""
    from llmctl.paths import Paths
    from llmctl.supervise.locks import try_lock
    from llmctl.supervise.state import ServerState, write_state

    port = ports()
    env = {**os.environ, **fault_profiles(tmp_path, port)}
    paths = Paths.from_env()
    paths.ensure()
    write_state(paths.state_file("srv"), ServerState(name="srv", state="failed", message="last run's end",
                                                     keeper_pid=999999, keeper_create_time=1.0))
    fd = try_lock(paths.lock_file("srv"))  # standing in for the other `up`, before its keeper writes
    waiter = subprocess.Popen([sys.executable, "-m", "llmctl", "up", "srv"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=1.5)
    finally:
        os.close(fd)
    _, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 8 and "ended without starting it" in err, err
    assert not helper_procs(port)


def test_fault_15_ctrl_c_during_wait_stops_what_it_started(tmp_path, ports):
    """Fault 15: Ctrl-C while `up` waits for health -> exit 130, the server it started is
    stopped, the state says stopped."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--never-ready")
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "up", "srv"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: helper_procs(port), what="server spawned")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert not helper_procs(port) and status_of(env)["state"] == "stopped"


def test_fault_19_log_rotation(tmp_path, ports):
    """Fault 19 (growth): the log rotates at LLMCTL_LOG_MAX_BYTES, keeping 3 backups."""
    port = ports()
    env = fault_profiles(tmp_path, port, "--spam 400")
    env["LLMCTL_LOG_MAX_BYTES"] = "20000"
    assert cli("up", "srv", env=env).returncode == 0
    logs = Path(os.environ["LLMCTL_HOME"]) / "logs"
    wait_for(lambda: (logs / "srv.log.3").exists(), timeout=30, what="three rotations")
    assert not (logs / "srv.log.4").exists()
    assert (logs / "srv.log").stat().st_size < 200_000
    assert "log line" in (logs / "srv.log.1").read_text()
    assert cli("down", "srv", env=env).returncode == 0


def test_fault_19b_full_disk_is_reported_and_state_stays_sound(tmp_path, ports):
    """Fault 19 (disk full): the log is made to fail with ENOSPC by pointing it at /dev/full
    (a real device that answers every write with 'No space left on device'); status reports
    it, the state file stays valid, the server keeps running and stops cleanly."""
    port = ports()
    env = fault_profiles(tmp_path, port)
    logs = Path(os.environ["LLMCTL_HOME"]) / "logs"
    logs.mkdir(parents=True, mode=0o700)
    (logs / "srv.log").symlink_to("/dev/full")
    r = cli("up", "srv", env=env)
    assert r.returncode == 0, r.stderr
    st = wait_for(lambda: (s := status_of(env))["message"] and s, what="disk-full note")
    assert "No space left on device" in st["message"] and st["state"] == "running"
    json.loads((Path(os.environ["LLMCTL_HOME"]) / "state" / "srv.json").read_text())
    assert cli("down", "srv", env=env).returncode == 0 and not helper_procs(port)


def test_fault_20_clock_jumps_never_give_negative_uptime():
    """Fault 20: uptime comes from the system-wide monotonic clock; a recorded start in the
    future (as after a clock jump) shows uptime 0, never negative. The recorded server is this
    test process itself (alive, ours), so no keeper races the planted record."""
    sup = Supervisor()
    sup.paths.ensure()
    me = psutil.Process()
    record = {"name": "jumpy", "state": "running", "pid": me.pid, "pid_create_time": me.create_time(),
              "port": 1, "started_mono": time.monotonic() + 3600, "boot_time": psutil.boot_time()}
    sup.paths.state_file("jumpy").write_text(json.dumps(record))
    [st] = sup.status(["jumpy"])
    assert st.state == "running" and st.uptime_s == 0
    record["started_mono"] = time.monotonic() - 5
    sup.paths.state_file("jumpy").write_text(json.dumps(record))
    assert 4.9 <= sup.status(["jumpy"])[0].uptime_s < 60
