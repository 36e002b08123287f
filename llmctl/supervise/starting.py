"""The start protocol of :class:`llmctl.supervise.control.Supervisor`: take each profile's
lock, adopt or refuse what runs without a keeper, check the port, fork the keepers in one new
session, and wait until each server answers its health check (or say why it did not)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import IllegalInstruction, LlmctlError, PortInUse, StartFailed, StartTimeout, StopFailed, raise_all
from .files import check_log, open_log
from .identity import ProcId, boot_id
from .keepers import in_session, lock_or_none, wait_released
from .locks import is_held
from .spec import LaunchSpec, write_spec
from .state import ServerState, read_state, write_state
from .states import LIVE, STARTED, State, Why
from .status import tail

if TYPE_CHECKING:
    import psutil

    from ..paths import Paths
    from .stopping import StopResult

Progress = Callable[[str, str, float], None]
Ready = tuple[int | None, float]  #: a server that answered: its pid and the seconds it took


@dataclass
class StartResult:
    name: str
    outcome: str  #: started | already-running | remote (not started: a server llmctl does not run)
    url: str
    pid: int | None
    seconds: float = 0.0
    note: str = ""  #: for the caller to show (a remote profile: skipped, and whether it answers)


class StartProtocol:
    """Mixed into the Supervisor: everything between "these specs" and "these servers answer"."""

    paths: Paths

    if TYPE_CHECKING:  # the Supervisor's, used here
        def stop(self, names: list[str] | None = None) -> list[StopResult]: ...
        def _stop_one(self, name: str, failed: str = "",
                      extra: list[psutil.Process] | tuple[()] = ()) -> StopResult: ...
        def recorded_names(self) -> list[str]: ...

    def launch(self, specs: list[LaunchSpec], *, progress: Progress | None = None) -> list[StartResult]:
        """Start ready-made launch specs (any engine) under keepers and wait for health."""
        self.paths.ensure()
        results: dict[str, StartResult] = {}
        locks: dict[str, int] = {}
        errors: list[LlmctlError] = []
        by_name = {s.name: s for s in specs}
        adopt: dict[str, ProcId | None] = {}
        others: list[str] = []
        try:
            for name, spec in by_name.items():
                fd = lock_or_none(self.paths.lock_file(name), self.paths.state_file(name))
                if fd is None:  # under a keeper already (another `up` may still be starting it)
                    others.append(name)
                    continue
                locks[name] = fd
                try:
                    check_log(self.paths.log_file(name))  # never a link planted in its place
                    adopt[name] = self._orphan(name, spec)
                    if adopt[name] is None:
                        self._check_free(name, spec)
                except LlmctlError as exc:
                    errors.append(exc)
            raise_all(errors)
        except BaseException:
            for fd in locks.values():
                os.close(fd)
            raise
        t0 = time.monotonic()
        launcher = None
        if locks:
            try:  # one process, in a new session, forks every keeper and exits at once
                launcher = self._spawn_keepers([(by_name[name], fd, adopt.get(name)) for name, fd in locks.items()])
            finally:
                for fd in locks.values():  # the launcher has its own copies
                    os.close(fd)
        try:
            if launcher is not None:
                launcher.wait()
            started = {n: (launcher.pid, by_name[n].argv) for n in locks} if launcher is not None else {}
            waited = self._wait_ready(list(locks) + others, t0, progress,
                                      others={n: by_name[n].start_timeout for n in others}, started=started)
        except KeyboardInterrupt:
            if launcher is not None:
                launcher.wait()  # let it finish forking the keepers, then stop them all
            self.stop(list(locks))
            from ..errors import Interrupted

            raise Interrupted("interrupted while waiting; the servers this command started were stopped") from None
        for name in locks:
            outcome = "adopted" if adopt.get(name) else "started"
            results[name] = StartResult(name, outcome, by_name[name].url, waited[name][0], waited[name][1])
        for name in others:
            results[name] = StartResult(name, "already-running", by_name[name].url, waited[name][0], waited[name][1])
        return [results[s.name] for s in specs]

    def _orphan(self, name: str, spec: LaunchSpec) -> ProcId | None:
        """A server of this profile still running after its keeper died: adopt it if it runs
        the same command line; refuse if it runs an older configuration."""
        st = read_state(self.paths.state_file(name), name)
        server = st.server_id() if st else None
        if server is None:
            return None
        proc = server.process()
        if proc is None:
            return None
        try:  # the launch spec its keeper was started with, still in the run directory
            old = LaunchSpec.read(self.paths.spec_file(name))
            same = (old.argv, old.env) == (spec.argv, spec.env)
        except (OSError, ValueError, TypeError):
            same = False
        if same:
            return server
        raise StartFailed(f"{name}: a server of an earlier configuration (pid {server.pid}) is still running "
                          f"without its keeper; stop it with `llmctl down {name}` first", name=name)

    def _check_free(self, name: str, spec: LaunchSpec) -> None:
        from .ports import port_free, port_holder

        if port_free(spec.host, spec.port):
            return
        holder = port_holder(spec.port)
        who = holder.describe() if holder else "another process"
        if holder and holder.pid:
            for other in self.recorded_names():
                ost = read_state(self.paths.state_file(other), other)
                server = ost.server_id() if ost else None
                if ost and ost.pid == holder.pid and server is not None and server.alive():
                    who = f"llmctl's own server {other!r} ({who}); `llmctl down {other}` stops it"
        raise PortInUse(f"{name}: port {spec.port} on {spec.host} is in use by {who}", name=name)

    def _spawn_keepers(self, jobs: list[tuple[LaunchSpec, int, ProcId | None]]) -> subprocess.Popen[bytes]:
        """Write each spec (and a `starting` state), then start the process that forks their
        keepers (llmctl/supervise/keeper.py): one session for all of them."""
        argv = [sys.executable, "-m", "llmctl.supervise.keeper", "--detach"]
        for spec, lock_fd, adopt in jobs:
            name = spec.name
            spec_path, log = self.paths.spec_file(name), self.paths.log_file(name)
            write_spec(spec, spec_path)
            state_path = self.paths.state_file(name)
            old = read_state(state_path, name) if adopt is not None else None
            if old is not None:  # the dead keeper's `running` must not pass for the new keeper's word
                old.state, old.keeper_pid, old.keeper_create_time, old.keeper_start = "starting", None, None, None
                write_state(state_path, old)
            else:
                write_state(state_path, ServerState(name=name, state="starting", engine=spec.engine,
                                                    host=spec.host, port=spec.port, url=spec.url, model=spec.model,
                                                    pid=adopt.pid if adopt else None,
                                                    pid_create_time=adopt.create_time if adopt else None,
                                                    pid_start=adopt.start if adopt else None,
                                                    boot_id=boot_id(), log=str(log)))
            argv += ["--keep", str(spec_path), str(state_path), str(log), str(lock_fd),
                     f"{adopt.pid}:{adopt.create_time!r}:{adopt.start}" if adopt is not None else "-"]
        # until each keeper points its output at its own log, anything printed goes to the first
        logf = open_log(self.paths.log_file(jobs[0][0].name))
        try:
            env = dict(os.environ, LLMCTL_KEEPER="1")
            return subprocess.Popen(argv, pass_fds=tuple(fd for _, fd, _ in jobs), start_new_session=True,
                                    env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd="/")
        finally:
            os.close(logf)

    def _wait_ready(self, names: list[str], t0: float, progress: Progress | None,
                    others: dict[str, float] | None = None,
                    started: dict[str, tuple[int, list[str]]] | None = None) -> dict[str, Ready]:
        """Wait for every name to be running; collect failures and raise them together.
        ``others`` (name: start timeout) are under keepers this call did not start: waited for
        (up to that timeout), never stopped. Their state is believed only once their live keeper
        wrote it: until the keeper of another `up` publishes, the file is the last run's.
        ``started`` (name: (session, argv)) says where this call's keepers started servers."""
        others = others or {}
        pending = set(names)
        done: dict[str, Ready] = {}
        last: dict[str, str] = {}
        failures: list[LlmctlError] = []
        while pending:
            for name in sorted(pending):
                st = read_state(self.paths.state_file(name), name)
                state = st.state if st else "starting"
                elapsed = time.monotonic() - t0
                if progress and last.get(name) != state:
                    progress(name, state, elapsed)
                    last[name] = state
                if name in others:
                    got: Ready | LlmctlError | None = self._other_up(name, st, elapsed, others[name])
                else:
                    got = self._our_up(name, st, (started or {}).get(name), elapsed)
                if got is None:
                    continue
                pending.discard(name)
                if isinstance(got, LlmctlError):
                    failures.append(got)
                else:
                    done[name] = got
            if pending:
                time.sleep(0.02)
        if failures:
            ok = [n for n in names if n in done]
            if ok:
                note = f"(started and left running: {', '.join(sorted(ok))})"
                failures[0].detail = f"{failures[0].detail}\n{note}" if failures[0].detail else note
            raise_all(failures)
        return done

    def _our_up(self, name: str, st: ServerState | None, started: tuple[int, list[str]] | None,
                elapsed: float) -> Ready | LlmctlError | None:
        """A server this call's keeper starts: (pid, seconds) once it answered, the error once it
        cannot, None while it is still starting."""
        state = st.state if st else State.STARTING
        if st is not None and state in STARTED:  # unhealthy: it answered 200, then failed
            return (st.pid, elapsed)  # its checks (status shows it); it did start
        if state in (State.FAILED, State.STOPPED, State.BACKOFF) or not is_held(self.paths.lock_file(name)):
            return self._start_failure(name, st, started)
        return None

    def _other_up(self, name: str, st: ServerState | None, elapsed: float,
                  timeout: float) -> Ready | LlmctlError | None:
        """A server under the keeper of another `up`: believed once that live keeper wrote it."""
        state = st.state if st else State.STARTING
        ours = st is not None and st.keeper_alive()
        if not is_held(self.paths.lock_file(name)):
            st = read_state(self.paths.state_file(name), name) or st  # its last word
            state = st.state if st else state
            how = f"the `up` or `down` that held its lock ended without starting it (it is {state})"
        elif ours and st is not None and state == State.RUNNING:
            return (st.pid, elapsed)
        elif ours and state in (State.FAILED, State.STOPPED, State.BACKOFF, State.UNHEALTHY):
            how = f"it is {state} under the keeper of an earlier `up`"
        elif elapsed > timeout:
            how = f"not ready within {timeout:.0f}s under the keeper of an earlier `up`"
        else:
            return None
        return self._start_error(name, st, how)

    def _start_failure(self, name: str, st: ServerState | None,
                       started: tuple[int, list[str]] | None) -> LlmctlError:
        """The error for a server of ours that did not start, once nothing of it runs."""
        # the keeper writes its last state before its lock goes: read it again, or a keeper
        # that failed between the state read and the lock check is reported without its reason
        st = read_state(self.paths.state_file(name), name) or st
        state = st.state if st else "starting"
        if state == State.BACKOFF:  # died right after its first 200: do not leave it cycling
            self.stop([name])
        elif state in LIVE and not is_held(self.paths.lock_file(name)):
            # its keeper died without a last word (SIGKILL): stop the server it was starting,
            # found by its record, else by this `up`'s session and the server's command line
            extra = in_session(*started) if started and not (st and st.pid) else []
            why = "its keeper died while the server was starting (killed?); llmctl stopped the server"
            try:
                self._stop_one(name, failed=why, extra=extra)
            except StopFailed as exc:
                return exc
            st = read_state(self.paths.state_file(name), name) or st
        wait_released(self.paths.lock_file(name), 5.0)  # nothing of it outlives `up`
        return self._start_error(name, st)

    def _start_error(self, name: str, st: ServerState | None, how: str = "") -> LlmctlError:
        log = str(self.paths.log_file(name))
        reason = st.message if st and st.message else "its keeper exited unexpectedly"
        cls = StartTimeout if st is not None and st.reason == Why.START_TIMEOUT else StartFailed
        if cls is StartFailed and st is not None and st.exit_signal == signal.SIGILL:
            cls = IllegalInstruction  # the hint says which build to use instead
        if how:
            return cls(f"{name} is not ready: {how} ({reason})", detail=f"last lines of {log}:\n{tail(log, 30)}",
                       name=name)
        return cls(f"{name} failed to start: {reason}", detail=f"last lines of {log}:\n{tail(log, 30)}", name=name)
