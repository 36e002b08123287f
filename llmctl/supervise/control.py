"""Start, stop and inspect servers: what `up`, `down` and `status` do, usable without the CLI.

>>> from llmctl import Supervisor, load_profiles
>>> sup = Supervisor(load_profiles(["profiles/demo.yaml"]))
>>> sup.start(["light"]); sup.status(["light"]); sup.stop(["light"])
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import IllegalInstruction, LlmctlError, PortInUse, StartFailed, StartTimeout, StopFailed
from ..paths import Paths
from ..profiles.schema import Config, Profile
from .files import check_log, open_log
from .identity import ProcId, boot_id
from .locks import is_held, try_lock
from .spec import LaunchSpec, write_spec
from .state import ServerState, read_state, write_state
from .states import LIVE, STARTED, State, Why
from .status import StatusEntry, add_gpu_usage, entry, tail

Progress = Callable[[str, str, float], None]


@dataclass
class StartResult:
    name: str
    outcome: str  #: started | already-running
    url: str
    pid: int | None
    seconds: float = 0.0


@dataclass
class StopResult:
    name: str
    outcome: str  #: stopped | not-running
    killed: bool = False  #: SIGKILL was needed
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """The keeper-based supervisor. ``config`` may be None for `down`/`status` of recorded servers."""

    def __init__(self, config: Config | None = None, paths: Paths | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.config = config or Config()
        self.paths = paths or Paths.from_env()
        self.warn = warn or (lambda msg: None)  #: gets warnings as sentences; the caller shows them

    # -- start ----------------------------------------------------------------------------
    def prepare(self, profile: Profile, start_timeout: float | None = None) -> LaunchSpec:
        """Everything that can fail before a process exists: engine, model, argv, key variable."""
        from ..engines.launch import spec_for

        spec = spec_for(profile, self.paths)
        if start_timeout is not None:
            spec.start_timeout = start_timeout
        spec.log_max_bytes = int(os.environ.get("LLMCTL_LOG_MAX_BYTES", spec.log_max_bytes))
        return spec

    def start(self, names: list[str], *, timeout: float | None = None,
              progress: Progress | None = None, force: bool = False) -> list[StartResult]:
        """Start the named profiles in parallel and wait until each answers its health check.

        All-or-nothing before anything runs: unknown names, bad models, missing engines and
        busy ports fail the whole call. Ctrl-C while waiting stops what this call started.
        """
        names = list(dict.fromkeys(names))
        profiles = [self.config.profile(n) for n in names]
        self.paths.ensure()
        specs: list[LaunchSpec] = []
        errors: list[LlmctlError] = []
        for p in profiles:
            try:
                specs.append(self.prepare(p, timeout))
            except LlmctlError as exc:
                errors.append(exc)
        _raise_all(errors)
        if not force:
            self._check_vram(names)
        return self.launch(specs, progress=progress)

    def _check_vram(self, names: list[str]) -> None:
        """Refuse, with the numbers, profiles that would not fit the GPU memory or vram_budget."""
        if all(self.config.profile(n).backend == "cpu" for n in names):
            return
        from ..gpu.budget import MIB, check_fits

        entries = self.status(list(self.config.profiles))
        live = [e for e in entries if e.state in LIVE and e.name not in names]
        to_start = [n for n in names if n not in {e.name for e in entries if e.state in LIVE}]
        running = {}
        for e in live:
            prof = self.config.profiles.get(e.name)
            if e.vram_mib is not None:
                running[e.name] = e.vram_mib * MIB
            elif prof is not None and prof.backend != "cpu":
                from ..gpu.estimate import estimate_profile

                total = estimate_profile(prof, self.paths).total
                if total is None:  # not counted: the check below cannot see it
                    self.warn(f"GPU memory of the running {e.name} is unknown; the check leaves it out")
                else:
                    running[e.name] = total
        if to_start:
            check_fits(self.config, to_start, paths=self.paths, running=running, warn=self.warn)

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
                fd = _lock_or_none(self.paths.lock_file(name), self.paths.state_file(name))
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
            _raise_all(errors)
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
        raise StartFailed(f"{name}: a server of an earlier configuration (pid {st.pid}) is still running "
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
                if ost and ost.pid == holder.pid and ost.server_id() and ost.server_id().alive():
                    who = f"llmctl's own server {other!r} ({who}); `llmctl down {other}` stops it"
        raise PortInUse(f"{name}: port {spec.port} on {spec.host} is in use by {who}", name=name)

    def _spawn_keepers(self, jobs: list[tuple[LaunchSpec, int, ProcId | None]]) -> subprocess.Popen:
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
                    started: dict[str, tuple[int, list[str]]] | None = None) -> dict[str, tuple]:
        """Wait for every name to be running; collect failures and raise them together.
        ``others`` (name: start timeout) are under keepers this call did not start: waited for
        (up to that timeout), never stopped. Their state is believed only once their live keeper
        wrote it: until the keeper of another `up` publishes, the file is the last run's.
        ``started`` (name: (session, argv)) says where this call's keepers started servers."""
        others = others or {}
        pending, done, last = set(names), {}, {}
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
                    ours = st is not None and st.keeper_alive()
                    how = None
                    if not is_held(self.paths.lock_file(name)):
                        st = read_state(self.paths.state_file(name), name) or st  # its last word
                        state = st.state if st else state
                        how = f"the `up` or `down` that held its lock ended without starting it (it is {state})"
                    elif ours and state == State.RUNNING:
                        done[name] = (st.pid, elapsed)
                        pending.discard(name)
                    elif ours and state in (State.FAILED, State.STOPPED, State.BACKOFF, State.UNHEALTHY):
                        how = f"it is {state} under the keeper of an earlier `up`"
                    elif elapsed > others[name]:
                        how = f"not ready within {others[name]:.0f}s under the keeper of an earlier `up`"
                    if how:
                        pending.discard(name)
                        failures.append(self._start_error(name, st, how))
                elif state in STARTED:  # unhealthy: it answered 200, then failed
                    done[name] = (st.pid, elapsed)     # its checks (status shows it); it did start
                    pending.discard(name)
                elif state in (State.FAILED, State.STOPPED, State.BACKOFF) or not is_held(self.paths.lock_file(name)):
                    pending.discard(name)
                    failures.append(self._start_failure(name, st, (started or {}).get(name)))
            if pending:
                time.sleep(0.02)
        if failures:
            ok = [n for n in names if n in done]
            if ok:
                note = f"(started and left running: {', '.join(sorted(ok))})"
                failures[0].detail = f"{failures[0].detail}\n{note}" if failures[0].detail else note
            _raise_all(failures)
        return done

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
            extra = _in_session(*started) if started and not (st and st.pid) else []
            why = "its keeper died while the server was starting (killed?); llmctl stopped the server"
            try:
                self._stop_one(name, failed=why, extra=extra)
            except StopFailed as exc:
                return exc
            st = read_state(self.paths.state_file(name), name) or st
        _wait_released(self.paths.lock_file(name), 5.0)  # nothing of it outlives `up`
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

    # -- stop -----------------------------------------------------------------------------
    def recorded_names(self) -> list[str]:
        if not self.paths.state.is_dir():
            return []
        from ..names import is_valid_name  # a stray file whose name is no name is not a record

        return sorted(p.stem for p in self.paths.state.glob("*.json") if is_valid_name(p.stem))

    def stop(self, names: list[str] | None = None) -> list[StopResult]:
        """Stop the named servers (all recorded ones when ``names`` is None). Idempotent."""
        if names is None:
            names = self.recorded_names()
        names = list(dict.fromkeys(names))
        failures: list[LlmctlError] = []

        def one(name: str) -> StopResult | None:
            try:
                return self._stop_one(name)
            except StopFailed as exc:
                failures.append(exc)
                return None

        if len(names) > 1:  # in parallel: each may wait up to its stop_timeout
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                results = list(pool.map(one, names))
        else:
            results = [one(n) for n in names]
        _raise_all(failures)
        return [r for r in results if r is not None]

    def _stop_one(self, name: str, failed: str = "", extra: list = ()) -> StopResult:
        """Stop one server: its keeper first, then, holding the profile's lock so that no
        keeper can start meanwhile, whatever its record (or ``extra``) still names. With
        ``failed``, the record is left `failed` with that reason instead of `stopped`."""
        from .stop import stop_tree, tree

        state_path = self.paths.state_file(name)
        fd, had_keeper, killed = self._take_lock(name)
        try:  # under the lock: the state read now is final until we let go
            st = read_state(state_path, name)
            was_live = had_keeper or bool(st and st.state in LIVE)
            was_live = self._stop_container(name) or was_live
            leader = st.server_id() if st else None
            members = st.member_ids() if st else []
            left = tree(leader, members, extra)
            pids = [p.pid for p in left]
            if left:
                was_live = True
                survivors, k = stop_tree(leader, members, timeout=st.stop_timeout if st else 10.0, extra=extra)
                killed = killed or k
                if survivors:
                    raise StopFailed(f"{name}: processes survived SIGKILL: {[p.pid for p in survivors]}", name=name)
            if failed or (st is not None and (st.state != "stopped" or st.pid)):
                st = st or ServerState(name=name)
                st.state, st.pid, st.pid_create_time, st.pid_start, st.members = "stopped", None, None, None, []
                st.keeper_pid = st.keeper_create_time = st.keeper_start = None
                st.health, st.message = None, "stopped" if was_live else st.message
                if failed:
                    st.state, st.message = "failed", failed
                write_state(state_path, st)
            for leftover in (self.paths.key_file(name), self.paths.spec_file(name)):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)
        return StopResult(name, "stopped" if was_live else "not-running", killed, pids)

    def _take_lock(self, name: str) -> tuple[int, bool, bool]:
        """Stop the profile's keeper, if one runs, and take its lock: until `down` lets go, no
        `up` can start a keeper that its state read would miss. Return (lock fd, a keeper was
        stopped, SIGKILL was needed)."""
        self.paths.ensure()
        state_path, lock = self.paths.state_file(name), self.paths.lock_file(name)
        had_keeper = killed = False
        for _ in range(5):  # each round stops the keeper that holds the lock, if any
            fd = _lock_or_none(lock, state_path)
            if fd is not None:
                return fd, had_keeper, killed
            found, k = self._stop_keeper(name)
            had_keeper, killed = had_keeper or found, killed or k
        raise StopFailed(f"{name}: its lock is still held after its keeper was stopped (another `llmctl up` "
                         f"keeps starting it?); run `llmctl down {name}` again", name=name)

    def _stop_keeper(self, name: str) -> tuple[bool, bool]:
        """SIGTERM the keeper holding the lock and wait for it to let go (SIGKILL if stuck).
        Without a keeper to find (the lock is an `up` or `down` at work), wait for the lock.
        Return (a keeper was found, SIGKILL was needed)."""
        import psutil

        state_path, lock = self.paths.state_file(name), self.paths.lock_file(name)
        st = read_state(state_path, name)
        keeper = _keeper_of(st, lock)
        soon = time.monotonic() + 2.0  # a keeper just forked by `up` has not published yet
        while keeper is None and is_held(lock) and time.monotonic() < soon:
            time.sleep(0.05)
            st = read_state(state_path, name) or st
            keeper = _keeper_of(st, lock)
        timeout = (st.stop_timeout if st else 10.0) + 10.0
        if keeper is None:
            _wait_released(lock, timeout)
            return False, False
        try:
            keeper.send_signal(signal.SIGTERM)
            if not _wait_released(lock, timeout):  # a stuck keeper: kill it and stop the tree ourselves
                keeper.kill()
                _wait_released(lock, 2.0)
                return True, True
        except psutil.NoSuchProcess:  # it ended meanwhile
            pass
        return True, False

    def _stop_container(self, name: str) -> bool:
        """What the server's launcher left without a keeper (a container outlives its client):
        stopped and removed by the launcher. True if something was still running."""
        from ..engines.registry import launcher_for

        try:
            spec = LaunchSpec.read(self.paths.spec_file(name))
            return launcher_for(spec.launcher).cleanup(spec)
        except (OSError, ValueError, TypeError):
            return False

    # -- status ---------------------------------------------------------------------------
    def status(self, names: list[str] | None = None) -> list[StatusEntry]:
        if names is None:
            names = list(self.config.profiles) + [n for n in self.recorded_names() if n not in self.config.profiles]
        else:
            for n in names:
                if n not in self.config.profiles and not self.paths.state_file(n).exists():
                    self.config.profile(n)  # raises UnknownProfile with the known names
        entries = [entry(self.config, self.paths, n) for n in dict.fromkeys(names)]
        add_gpu_usage(entries)
        return entries

def _lock_or_none(lock: Path, st_path: Path | None = None, wait: float = 0.3) -> int | None:
    """The profile's lock, or None while a keeper holds it. A `status` checking the lock holds
    it (shared) for microseconds, longer if it is preempted on a busy machine, and must not pass
    for a keeper: retried 5 ms apart, up to 0.3 s unless the state names a live keeper."""
    fd = try_lock(lock)
    deadline = time.monotonic() + wait
    tries = 0
    while fd is None and time.monotonic() < deadline:
        tries += 1
        if tries == 3 and st_path is not None:
            st = read_state(st_path, lock.stem)
            if st and st.keeper_alive():
                break  # a keeper runs it: no need to wait out the checkers
        time.sleep(0.005)
        fd = try_lock(lock)
    return fd


def _wait_released(lock: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_held(lock):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _keeper_of(st: ServerState | None, lock: Path):
    """The keeper process, by recorded identity, else the keeper process that holds our lock
    file open (compared by device and inode: the paths may differ through symlinks). Keepers
    forked by one `up` share a command line; each keeps only its own lock."""
    import psutil

    recorded = st.keeper_id() if st else None
    if recorded is not None:
        proc = recorded.process()
        if proc is not None:
            return proc
    try:
        want = os.stat(lock)
    except OSError:
        return None
    found = []
    for proc in psutil.process_iter(["cmdline", "uids", "ppid"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "llmctl.supervise.keeper" not in cmd or proc.info["uids"].real != os.getuid():
                continue
            locks = [f.path for f in proc.open_files() if f.path.endswith(".lock")]
            # the keeper holds its own lock only; the launcher that forks the keepers of one
            # `up` holds all of theirs for a moment, and is not the keeper
            if len(locks) == 1 and _same_file(locks[0], want):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    # a launcher of one profile also holds just that lock until it returns: its child is the keeper
    parents = {p.info["ppid"] for p in found}
    return next((p for p in found if p.pid not in parents), None)


def _in_session(session: int, argv: list[str]) -> list:
    """Our processes in ``session`` (the one an `up` started its keepers in) that run ``argv``,
    with their descendants: a server whose keeper died before it could record the server."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            if proc.info["cmdline"] == argv and proc.info["uids"].real == os.getuid() \
                    and os.getsid(proc.pid) == session:
                found += [proc, *proc.children(recursive=True)]
        except (OSError, psutil.Error, TypeError):
            continue
    return found


def _same_file(path: str, st: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def _raise_all(errors: list[LlmctlError]) -> None:
    if not errors:
        return
    first = errors[0]
    if len(errors) > 1:
        more = "\n".join(f"also: {e.message}" for e in errors[1:])
        first.detail = f"{first.detail}\n{more}" if first.detail else more
    raise first
