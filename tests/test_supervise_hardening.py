"""The supervisor against planted files, bad state records, other boots, races and clock steps
(issue 18, items 5, 7, 8, 9, 10 and fault 20). Servers are the purpose-built misbehaving test
server (tests/helpers/misbehaving_server.py) under real keepers; strangers are real `sleep`s."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from llmctl.errors import StartFailed, UnsafeFile
from llmctl.supervise.control import Supervisor
from llmctl.supervise.locks import is_held
from llmctl.supervise.spec import LaunchSpec

from .util import cli, port_is_free, wait_for

HELPER = str(Path(__file__).parent / "helpers" / "misbehaving_server.py")
KEY_VAR = "HARDENING_TEST_KEY"


def spec(name: str, port: int, *flags: str, **kw) -> LaunchSpec:
    kw.setdefault("start_timeout", 20)
    kw.setdefault("stop_timeout", 2)
    return LaunchSpec(name=name, engine="test", argv=[sys.executable, HELPER, "--port", str(port), *flags],
                      env={}, host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}", **kw)


def start_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22)."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rindex(b")") + 2:].split()[19])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def record(sup: Supervisor, name: str) -> dict:
    return json.loads(sup.paths.state_file(name).read_text())


def kill_keeper(sup: Supervisor, name: str) -> dict:
    """SIGKILL the profile's keeper; return the record it left (the server lives on)."""
    rec = record(sup, name)
    os.kill(rec["keeper_pid"], signal.SIGKILL)
    wait_for(lambda: gone(rec["keeper_pid"]) and not is_held(sup.paths.lock_file(name)), what="keeper gone")
    return rec


# -- item 5: the key file and the log never follow a planted link -----------------------------

def test_key_file_is_never_written_through_a_planted_link_or_into_a_strangers_file(tmp_path, ports, monkeypatch):
    """A link planted where the API key goes makes the start fail, names the link, and leaves
    the link and its target untouched: the key never lands outside the run directory."""
    monkeypatch.setenv(KEY_VAR, "sekrit-key-value")
    sup = Supervisor()
    sup.paths.ensure()
    key = sup.paths.key_file("keyed")
    outside = tmp_path / "outside.txt"
    key.symlink_to(outside)
    with pytest.raises(StartFailed) as ei:
        sup.launch([spec("keyed", ports(), key_files={str(key): KEY_VAR})])
    assert "symbolic link" in ei.value.message and str(key) in ei.value.message
    assert not outside.exists() and key.is_symlink()
    assert sup.status(["keyed"])[0].state == "failed"
    if os.getuid() == 0:  # a regular file of another user there is refused too, and kept
        key.unlink()
        key.write_text("theirs")
        os.chown(key, 65534, 65534)
        with pytest.raises(StartFailed) as ei:
            sup.launch([spec("keyed", ports(), key_files={str(key): KEY_VAR})])
        assert "owned by another user" in ei.value.message and key.read_text() == "theirs"


def test_stale_key_file_is_replaced_by_a_new_private_one(ports, monkeypatch):
    """A stale key file left world-readable (0644) is not reused: the keeper removes it and
    creates a new 0600 file (O_EXCL), so the mode is ours whatever was there."""
    monkeypatch.setenv(KEY_VAR, "sekrit-key-value")
    sup = Supervisor()
    sup.paths.ensure()
    key = sup.paths.key_file("keyed")
    key.write_text("stale")
    os.chmod(key, 0o644)
    try:
        sup.launch([spec("keyed", ports(), key_files={str(key): KEY_VAR})])
        st = key.lstat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISREG(st.st_mode)
        assert key.read_text() == "sekrit-key-value"
    finally:
        sup.stop(["keyed"])
    assert not key.exists()


def test_log_planted_as_a_link_to_a_file_is_refused_before_anything_starts(tmp_path, ports):
    """A link to a file in place of the log: `up` refuses before any process exists, and the
    link's target is not appended to (a link to a device, as /dev/full, stays allowed)."""
    sup = Supervisor()
    sup.paths.ensure()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    sup.paths.log_file("linked").symlink_to(victim)
    port = ports()
    with pytest.raises(UnsafeFile) as ei:
        sup.launch([spec("linked", port)])
    assert "symbolic link" in ei.value.message
    assert victim.read_text() == "precious\n"
    assert not sup.paths.state_file("linked").exists() and port_is_free(port)


def test_lock_file_planted_as_a_link_is_refused_and_its_target_never_created(tmp_path, ports):
    """A link in place of a profile's lock file: `up` and `down` refuse it, naming it, and the
    file it points at is not created (as root, a link to /etc/nologin would lock users out)."""
    sup = Supervisor()
    sup.paths.ensure()
    target = tmp_path / "created-through-the-link"
    sup.paths.lock_file("locky").symlink_to(target)
    for attempt in (lambda: sup.launch([spec("locky", ports())]), lambda: sup.stop(["locky"])):
        with pytest.raises(UnsafeFile) as ei:
            attempt()
        assert "symbolic link" in ei.value.message and not target.exists()


def test_rotation_never_truncates_a_link_put_in_place_of_the_log(tmp_path, ports):
    """Once the keeper runs, the log is swapped for a link to another file bigger than the
    rotation size. Rotations go on (through the keeper's own descriptor), and the link's target
    is neither truncated nor copied."""
    sup = Supervisor()
    log = sup.paths.log_file("rot")
    sup.launch([spec("rot", ports(), "--spam", "400", log_max_bytes=20000)])
    try:
        backup = log.with_name("rot.log.1")
        wait_for(backup.exists, what="a first rotation")
        victim = tmp_path / "victim.txt"
        victim.write_text("keep me\n" * 10000)  # 80 kB: above the rotation size
        os.rename(log, log.with_name("rot.log.moved"))
        log.symlink_to(victim)
        first = backup.stat().st_ino
        wait_for(lambda: backup.exists() and backup.stat().st_ino != first, what="a rotation after the swap")
        assert victim.read_text() == "keep me\n" * 10000
        assert log.is_symlink() and "keep me" not in backup.read_text()
        assert "log line" in backup.read_text()
    finally:
        sup.stop(["rot"])


# -- item 7: state files with bad fields ------------------------------------------------------

def bad_records(pid: int, ct: float) -> dict[str, bytes]:
    """State files that parse as JSON (or nearly) but must not be trusted. ``pid``/``ct`` are
    a live stranger's, so a record trusted by mistake would have `down` signal it."""
    base = {"name": "bad", "state": "running", "pid": pid, "pid_create_time": ct, "port": 1}

    def rec(**kw) -> bytes:
        return json.dumps({**base, **kw}).encode()

    return {
        "not UTF-8": b'{"name": "bad", "state": "running", "model": "\xff\xfe"}',
        "string pid": rec(pid=str(pid)),
        "NaN start time": rec().replace(json.dumps(ct).encode(), b"NaN"),
        "1e400 start time": rec().replace(json.dumps(ct).encode(), b"1e400"),
        "negative keeper pid": rec(keeper_pid=-5, keeper_create_time=ct),
        "members not a list": rec(members="x"),
        "member of strings": rec(members=[["1", "2"]]),
        "string start_mono": rec(started_mono="x"),
        "string port": rec(port="80"),
        "unknown state": rec(state="zombie"),
        "nested 100k deep": b'{"name": "bad", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    }


def test_state_file_with_bad_fields_is_moved_aside_and_never_breaks_status_up_or_down(ports):
    """Each bad record is moved aside (``bad.json.corrupt``) by `status`, `down` and `up`
    alike, never trusted (the stranger whose pid it names is never signalled), and `up`
    starts the server as if there were no record."""
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        ct = psutil.Process(stranger.pid).create_time()
        sup = Supervisor()
        sup.paths.ensure()
        path = sup.paths.state_file("bad")
        aside = path.with_name("bad.json.corrupt")
        for what, raw in bad_records(stranger.pid, ct).items():
            for step in ("status", "down", "up"):
                aside.unlink(missing_ok=True)
                path.write_bytes(raw)
                if step == "status":
                    assert sup.status(["bad"])[0].pid is None, what
                elif step == "down":
                    sup.stop(["bad"])
                else:
                    [res] = sup.launch([spec("bad", ports())])
                    assert res.outcome == "started", what
                    sup.stop(["bad"])
                assert aside.exists(), (what, step)
                assert stranger.poll() is None, (what, step)
        path.write_bytes(bad_records(stranger.pid, ct)["not UTF-8"])
        r = cli("status", "bad", "--json")
        assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
        path.write_bytes(bad_records(stranger.pid, ct)["NaN start time"])
        r = cli("down", "bad")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


# -- item 8: records from another boot ---------------------------------------------------------

def test_record_from_another_boot_is_never_acted_on():
    """After a reboot, pids and tick counts start again from zero: a recorded server's pid may
    lead a stranger, or number a stranger's process group whose leader has exited, and even
    its start tick may match. A record with another boot id names nothing of this boot:
    `down` signals neither stranger and `status` shows no pid."""
    grouped = subprocess.Popen(["sh", "-c", "sleep 120 & echo $!"], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    orphan_pid = int(grouped.stdout.readline())
    grouped.wait()  # the group's leader is gone; its member lives on under the leader's number
    grouped.stdout.close()
    leader = subprocess.Popen(["sleep", "121"], start_new_session=True)
    try:
        assert os.getpgid(orphan_pid) == grouped.pid and not psutil.pid_exists(grouped.pid)
        sup = Supervisor()
        sup.paths.ensure()
        other_boot = "00000000-0000-4000-8000-000000000000"
        orphan_ct = psutil.Process(orphan_pid).create_time()
        leader_ct = psutil.Process(leader.pid).create_time()
        for name, pid, ct, ticks in (("dead", grouped.pid, orphan_ct - 5, start_ticks(orphan_pid) - 500),
                                     ("alive", leader.pid, leader_ct, start_ticks(leader.pid))):
            sup.paths.state_file(name).write_text(json.dumps(
                {"name": name, "state": "running", "pid": pid, "pid_create_time": ct, "pid_start": ticks,
                 "boot_id": other_boot, "port": 1, "members": [[pid, ct, ticks]]}))
        entries = {e.name: e for e in sup.status(["dead", "alive"])}
        assert all(e.pid is None and e.state == "stopped" and "reboot" in e.message for e in entries.values())
        sup.stop(["dead", "alive"])
        assert psutil.pid_exists(orphan_pid) and not gone(orphan_pid)
        assert leader.poll() is None
    finally:
        os.killpg(grouped.pid, signal.SIGKILL)
        leader.kill()
        leader.wait()
        wait_for(lambda: gone(orphan_pid), what="the group member killed")


# -- item 9: `down` racing `up` ----------------------------------------------------------------

def test_up_arriving_between_downs_lock_check_and_state_read_is_not_left_running(ports, monkeypatch):
    """`down` of a server whose keeper was killed, with an `up` (which would adopt the server)
    started on purpose inside `down`, after it checked the lock and before it read the state
    (the gap widened by a state read that first runs the `up` up to its lock attempt). When
    `down` says stopped, no keeper may hold the lock to restart the server behind its back;
    the `up` that came in the gap does not start anything."""
    from llmctl.supervise import starting, stopping

    port = ports()
    the_spec = spec("racy", port)
    sup = Supervisor()
    sup.launch([the_spec])
    rec = kill_keeper(sup, "racy")
    real_read, real_lock = stopping.read_state, starting.lock_or_none
    tried, up_got_lock, up_errors, up_results = threading.Event(), [], [], []
    up_thread = threading.Thread(target=lambda: _up(the_spec, up_results, up_errors), name="racing-up")

    def lock_then_tell(*args, **kw):
        fd = real_lock(*args, **kw)
        if threading.current_thread() is up_thread and not tried.is_set():
            up_got_lock.append(fd is not None)
            tried.set()
        return fd

    def read_after_an_up(path, name):
        if threading.current_thread() is threading.main_thread() and up_thread.ident is None:
            up_thread.start()  # the gap: an `up` runs up to its lock attempt before `down` reads
            assert tried.wait(30), "the racing up never tried the lock"
            if up_got_lock[0]:  # it got the lock: let its keeper appear before `down` reads
                wait_for(lambda: (s := real_read(path, name)) and s.keeper_alive(), what="the new keeper")
        return real_read(path, name)

    monkeypatch.setattr(starting, "lock_or_none", lock_then_tell)  # the `up`'s lock attempt
    monkeypatch.setattr(stopping, "lock_or_none", lock_then_tell)  # `down`'s
    monkeypatch.setattr(stopping, "read_state", read_after_an_up)  # `down`'s state read
    try:
        [res] = Supervisor().stop(["racy"])
        assert res.outcome == "stopped"
        assert not is_held(sup.paths.lock_file("racy")), "a keeper runs that `down` reported stopped"
        assert gone(rec["pid"])
        up_thread.join(60)
        assert up_errors and not up_results  # the `up` in the gap started nothing
        assert not is_held(sup.paths.lock_file("racy")) and port_is_free(port)
    finally:
        monkeypatch.undo()
        if up_thread.is_alive():
            up_thread.join(60)
        Supervisor().stop(["racy"])


def _up(the_spec: LaunchSpec, results: list, errors: list) -> None:
    try:
        results.extend(Supervisor().launch([the_spec]))
    except Exception as exc:  # noqa: BLE001 - recorded for the assertions
        errors.append(exc)


# -- item 10: the keeper SIGKILLed while its server loads --------------------------------------

def test_keeper_killed_while_its_server_loads_leaves_nothing_running(ports):
    """A real keeper is SIGKILLed while its server answers 503 (loading): `up` fails saying
    so, and the server it started is stopped before `up` returns."""
    port = ports()
    sup = Supervisor()
    errors: list = []

    def up():
        try:
            sup.launch([spec("loady", port, "--ready-after", "120", start_timeout=150)])
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            errors.append(exc)

    t = threading.Thread(target=up)
    t.start()
    try:
        rec = wait_for(lambda: (sup.paths.state_file("loady").exists() and (r := record(sup, "loady"))["pid"]
                                and r["keeper_pid"] and r["health"] == "loading" and r), what="a loading server")
        os.kill(rec["keeper_pid"], signal.SIGKILL)
        t.join(60)
        assert errors and isinstance(errors[0], StartFailed), errors
        assert "keeper died" in errors[0].message
        assert gone(rec["pid"]) and port_is_free(port)
        [st] = sup.status(["loady"])
        assert st.state == "failed" and st.pid is None
    finally:
        t.join(60)
        sup.stop(["loady"])


# -- fault 20: a wall-clock step ---------------------------------------------------------------

def test_clock_step_does_not_disown_our_servers(ports, monkeypatch):
    """Fault 20. The wall clock is stepped an hour ahead as seen by this process (psutil's
    boot time, which the kernel derives from the wall clock and psutil adds to every process's
    start, is faked: the machine's clock is shared and is not ours to change; a time namespace
    offsets only the monotonic and boot clocks). The server, whose keeper was killed, is still
    recognised: `status` shows its pid, `up` adopts it, `down` stops it."""
    import psutil._pslinux as pslinux

    port = ports()
    sup = Supervisor()
    sup.launch([spec("jumpy", port)])
    try:
        rec = kill_keeper(sup, "jumpy")
        real_boot_time = pslinux.boot_time
        monkeypatch.setattr(pslinux, "boot_time", lambda: real_boot_time() + 3600)
        assert abs(psutil.Process(rec["pid"]).create_time() - rec["pid_create_time"]) > 3000  # stepped
        [st] = sup.status(["jumpy"])
        assert st.pid == rec["pid"] and "unsupervised" in st.message
        [res] = sup.launch([spec("jumpy", port)])
        assert res.outcome == "adopted" and res.pid == rec["pid"]
        [stop] = sup.stop(["jumpy"])
        assert stop.outcome == "stopped" and gone(rec["pid"]) and port_is_free(port)
    finally:
        monkeypatch.undo()
        sup.stop(["jumpy"])
