"""The keeper: one small detached process per running server (like runit's runsv).

It holds the profile's lock for its whole life, starts the server in its own process group,
waits on it, probes its health, applies the restart policy, rotates the log, and writes the
state file atomically. ``llmctl down`` sends it SIGTERM; it stops the server's whole tree and
exits.

Run as ``python -m llmctl.supervise.keeper [--detach] --keep SPEC STATE LOG LOCK_FD ADOPT ...``
(ADOPT: ``-``, or ``PID:CREATE_TIME`` of a running server to watch instead of starting one).
One ``up`` starts one such process for all its servers, in a new session: it forks one keeper
per ``--keep`` and exits. Sharing one session matters on Linux, where each session is its own
scheduling group (sched_autogroup): two CPU servers loading in two sessions on a small machine
were seen taking 2-4x as long as the same two started from one shell.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines.registry import Exit, Launcher, launcher_for
from .files import open_log, rotate_log, write_new_private
from .identity import ProcId, boot_id
from .machine import ALIVE, Action, Machine, Policy
from .spec import LaunchSpec, policy_for
from .state import ServerState, write_state
from .states import State

if TYPE_CHECKING:
    from types import FrameType

    from .osops import OsOps

TICK_STARTING = 0.05  #: loop period while waiting for the first 200 (fast `up`)
TICK_RUNNING = 0.2
MEMBERS_EVERY = 2.0
ROTATE_EVERY = 1.0


class Keeper:
    def __init__(self, spec: LaunchSpec, state_path: Path, log_path: Path, ops: OsOps,
                 policy: Policy | None = None, adopt: ProcId | None = None, launcher: Launcher | None = None):
        self.spec, self.state_path, self.log_path, self.ops = spec, state_path, log_path, ops
        self.launcher = launcher or launcher_for(spec.launcher)  #: spawns, stops, reads exits
        self.machine = Machine(policy or policy_for(spec))
        self.server: ProcId | None = None
        self.members: list[ProcId] = []
        self.stop_flag = False
        self.adopt = adopt  #: a live server left by a dead keeper, watched instead of started
        self.log_fd = -1
        self._next_probe = 0.0
        self._next_members = 0.0
        self._next_rotate = 0.0
        self._published: str | None = None
        self.log_error = ""  #: the last failure to write the log (disk full...), shown by status
        me = ProcId.of(os.getpid())
        import psutil

        self.record = ServerState(
            name=spec.name, engine=spec.engine, host=spec.host, port=spec.port, url=spec.url,
            model=spec.model, keeper_pid=os.getpid(), keeper_create_time=me.create_time if me else None,
            keeper_start=me.start if me else None, boot_id=boot_id(), boot_time=psutil.boot_time(),
            log=str(log_path), stop_timeout=spec.stop_timeout, state=State.STARTING.value)

    # -- log ----------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        line = f"[llmctl {time.strftime('%Y-%m-%d %H:%M:%S')}] {self.spec.name}: {text}\n"
        try:
            os.write(self.log_fd, line.encode())
            self.log_error = ""
        except OSError as exc:
            self.log_error = f"cannot write the log: {exc.strerror or exc}"

    def rotate(self) -> None:
        """Size-based rotation by copy-and-truncate through our own descriptor (never the path,
        where a link may have been put): the server keeps its O_APPEND descriptor."""
        try:
            if os.fstat(self.log_fd).st_size < self.spec.log_max_bytes:
                return
            rotate_log(self.log_fd, self.log_path, self.spec.log_backups)
            self.note("log rotated")
        except OSError as exc:
            self.log_error = f"log rotation failed: {exc.strerror or exc}"

    # -- state --------------------------------------------------------------------------------
    def publish(self) -> None:
        m, r = self.machine, self.record
        r.state = m.state.value
        r.pid = self.server.pid if self.server else None
        r.pid_create_time = self.server.create_time if self.server else None
        r.pid_start = self.server.start if self.server else None
        r.members = [p.to_list() for p in self.members]
        r.started_mono = m.started_at if self.server else None
        r.ready_mono = m.ready_at if self.server else None
        r.restarts, r.exit_code, r.exit_signal = m.restarts, m.exit_code, m.exit_signal
        r.health = m.health.value if m.health else None
        r.message = "; ".join(x for x in (m.reason, self.log_error) if x)
        r.reason = m.why.value
        r.next_try_wall = (time.time() + m.next_try_at - self.ops.now()) if m.next_try_at else None
        snapshot = r.to_json()
        if snapshot != self._published or not self.state_path.exists():  # moved aside as corrupt
            try:
                write_state(self.state_path, r)
                self._published = snapshot
            except Exception as exc:  # disk full: keep supervising, try again next tick
                self.note(f"cannot write state: {exc}")

    # -- actions ------------------------------------------------------------------------------
    def spawn(self) -> None:
        env = dict(os.environ)
        env.update(self.spec.env)
        for var, source in self.spec.env_from.items():
            if source in os.environ:
                env[var] = os.environ[source]
        for var in self.spec.unset_env + ["LLMCTL_KEEPER"]:
            env.pop(var, None)
        now = self.ops.now()
        try:
            self.write_key_files()
            self.server = self.launcher.spawn(self.spec, self.ops, env, self.log_fd)
        except Exception as exc:  # noqa: BLE001 - OSError, or a container that is in the way
            exc_text = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
            self.note(f"cannot start {self.spec.argv[0]}: {exc_text}")
            self.machine.cannot_start(f"cannot start {self.spec.argv[0]}: {exc_text}", now)
            return
        self.record.started_wall = time.time()
        self.machine.spawned(now)
        self._next_probe = now
        self.note(f"started pid {self.server.pid}: {' '.join(self.spec.argv)}")

    def write_key_files(self) -> None:
        """The server's API key files (0600), from the variables of our own environment (the
        value never passes through the spec, the state or argv)."""
        for path, var in self.spec.key_files.items():
            value = os.environ.get(var)
            if not value:
                raise OSError(f"${var} (the API key) is not set in the keeper's environment")
            write_new_private(path, value.encode())  # never through a link, always 0600

    def adopt_server(self, server: ProcId) -> None:
        """Watch a server whose keeper died (it is not our child: poll it instead of waiting)."""
        self.server = server
        now = self.ops.now()
        self.machine.adopted(now - server.age())  # it ran before: a death now is a crash, not a bad start
        self.record.started_wall = server.create_time
        self._next_probe = now
        self.note(f"adopted running server pid {server.pid} (its keeper had died)")

    def stop_server(self) -> None:
        if self.server is None:
            return
        self.launcher.stop(self.spec)  # by its own means first (a container, by name); then the tree
        left = self.ops.stop(self.server, self.members, self.spec.stop_timeout)
        status = getattr(self.ops, "stopped_codes", {}).get(self.server.pid)  # reaped by the stop
        if status is not None:
            self.machine.exit_code, self.machine.exit_signal = (None, -status) if status < 0 else (status, None)
        for pid, code, sig in self.ops.reap():
            if pid == self.server.pid:
                self.machine.exit_code, self.machine.exit_signal = code, sig
        m = self.machine
        gone = self._exit_of(m.exit_code, m.exit_signal)
        m.exit_code, m.exit_signal = gone.code, gone.signal
        if left:  # kept as members: the state says so, and `down` finds them and fails loudly
            self.note(f"processes survived SIGKILL: {', '.join(str(p.pid) for p in left)}")
        self.server, self.members = None, left

    def on_exit(self, code: int | None, sig: int | None) -> None:
        self.note(f"server exited ({f'signal {sig}' if sig else f'code {code}'})")
        gone = self._exit_of(code, sig)  # a container's own exit code, for one
        self.server = None
        # Whatever the server left behind (children in its group) goes with it.
        if self.members:  # what survives stays recorded, for `down` to find and report
            self.members = self.ops.stop(None, self.members, 2.0)
        # the cause (an OOM kill) goes where `status` and `up` show the reason, not only in the log
        self.machine.exited(gone.code, gone.signal, self.ops.now(), gone.cause)
        if self.machine.state is State.BACKOFF:
            self.note(self.machine.reason)

    def _exit_of(self, code: int | None, sig: int | None) -> Exit:
        """The spawned process ended with ``code``/``sig``: how the server ended, as its launcher
        reads it (and cleans up after it: a container is stopped if it still runs, then removed);
        the launcher's notes go to the log."""
        gone = self.launcher.after_exit(self.spec, code, sig)
        for line in gone.notes:
            self.note(line)
        return gone

    # -- loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        self.log_fd = open_log(self.log_path, os.O_RDWR | os.O_APPEND)  # read back when rotating
        self.ops.become_subreaper()
        if self.adopt is not None:
            self.adopt_server(self.adopt)
        else:
            self.spawn()
        self.publish()
        m = self.machine
        while True:
            now = self.ops.now()
            if self.stop_flag and not m.stopping:
                self._stop_requested()
                break
            self._watch()
            self._act(m.tick(now))
            if m.state in ALIVE and self.server is not None and now >= self._next_probe:
                self._probe(now)
            self._housekeep(now)
            self.publish()
            if m.done:
                if m.state is State.FAILED:
                    self.note(f"failed: {m.reason}")
                break
            self.ops.sleep(TICK_STARTING if m.state is State.STARTING else TICK_RUNNING)
        return 0

    def _stop_requested(self) -> None:
        """`down` (SIGTERM): stop the server and record that it was stopped on request."""
        m = self.machine
        self.note("stop requested")
        m.stop_requested()
        if self.server is not None:
            self.stop_server()
            m.exited(m.exit_code, m.exit_signal, self.ops.now())
        self.publish()

    def _watch(self) -> None:
        """Learn whether the server exited: reap our child, or poll an adopted server."""
        for pid, code, sig in self.ops.reap():
            if self.server is not None and pid == self.server.pid:
                self.on_exit(code, sig)
        if self.adopt is not None and self.server is not None and self.server.pid == self.adopt.pid \
                and not self.ops.alive(self.server):
            self.on_exit(None, None)  # not our child: its exit status is not ours to learn

    def _act(self, action: Action) -> None:
        """Carry out what the state machine asks: a (re)start, a restart when unhealthy, a kill
        at the start timeout."""
        m = self.machine
        if action is Action.SPAWN:
            self.spawn()
        elif action is Action.RESTART:
            self.note(f"{m.reason}: restarting it")
            self.stop_server()
            m.restarted_unhealthy(m.exit_code, m.exit_signal or signal.SIGTERM, self.ops.now())
        elif action is Action.KILL:
            self.note(f"no healthy answer within {m.policy.start_timeout:.0f}s: stopping")
            self.stop_server()
            m.killed_for_timeout()

    def _probe(self, now: float) -> None:
        m = self.machine
        before = m.state
        m.health_result(self.ops.health(self.spec.host, self.spec.port, self.spec.health_path), now)
        if before is State.STARTING and m.state is State.RUNNING:
            started = m.started_at if m.started_at is not None else now
            self.note(f"healthy after {now - started:.2f}s at {self.spec.url}")
        elif m.state is State.UNHEALTHY and before is not State.UNHEALTHY:
            self.note(m.reason)
        interval = TICK_STARTING if m.state is State.STARTING else self.spec.health_interval
        self._next_probe = now + interval

    def _housekeep(self, now: float) -> None:
        """Now and then: the server's process tree (for `down` and the GPU figures), the log's size."""
        if self.server is not None and now >= self._next_members:
            self.members = self.ops.descendants(self.server)
            self._next_members = now + MEMBERS_EVERY
        if now >= self._next_rotate:
            self.rotate()
            if self.log_error:
                self.note("log writable again")  # clears log_error if the disk has room now
            self._next_rotate = now + ROTATE_EVERY


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llmctl-keeper")
    ap.add_argument("--keep", nargs=5, action="append", required=True,
                    metavar=("SPEC", "STATE", "LOG", "LOCK_FD", "ADOPT"))
    ap.add_argument("--detach", action="store_true")
    args = ap.parse_args(argv)
    jobs = args.keep
    if not args.detach and len(jobs) == 1:
        return _keep(*jobs[0])
    for i, job in enumerate(jobs):  # one keeper each; this process returns at once
        if os.fork() == 0:
            for j, other in enumerate(jobs):
                if j != i:
                    os.close(int(other[3]))  # each keeper holds only its own lock
            code = 1
            try:
                code = _keep(*job)
            except BaseException:  # noqa: BLE001 - into the server's log, then out
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
    return 0


def _keep(spec: str, state: str, log: str, lock_fd: str, adopt: str) -> int:
    fd = int(lock_fd)
    os.set_inheritable(fd, False)  # the lock must die with the keeper, not the server
    log_fd = open_log(log)
    os.dup2(log_fd, 2)  # our own tracebacks land in the server's log
    os.dup2(log_fd, 1)
    os.close(log_fd)
    from .osops import OsOps

    watched = None
    if adopt != "-":  # PID:CREATE_TIME[:START_TICKS]
        pid, create_time, *start = adopt.split(":")
        ticks = int(start[0]) if start and start[0] != "None" else None
        watched = ProcId(int(pid), float(create_time), ticks, boot_id() if ticks is not None else None)
    ops = OsOps()
    keeper = Keeper(LaunchSpec.read(Path(spec)), Path(state), Path(log), ops, adopt=watched)

    def on_term(signum: int, frame: FrameType | None) -> None:
        keeper.stop_flag = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a child's exit wakes the loop too
    ops.wake_on_signals()
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
