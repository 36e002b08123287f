"""What `status` reports for one server: its recorded state checked against the keeper lock,
the processes, the container (a launcher that runs one) and the GPU tools."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..paths import Paths
from ..profiles.schema import Config, Profile
from .locks import is_held
from .spec import LaunchSpec
from .state import ServerState, read_state
from .states import LIVE, STARTED, State, Why, backoff_note

LIVE_STATES = tuple(s.value for s in LIVE)  #: the string form of states.LIVE, for older callers


@dataclass
class StatusEntry:
    """One row of `status` (the JSON fields are a contract)."""

    name: str
    engine: str
    state: str
    pid: int | None
    port: int | None
    url: str | None
    model: str | None
    uptime_s: float | None
    restarts: int
    exit_code: int | None
    exit_signal: int | None
    health: str | None
    message: str = ""
    reason: str = ""  #: the kind of the message (llmctl.supervise.states.Why): for code to branch on
    supervised: bool = False  #: a keeper is alive for it
    defined: bool = True  #: present in the loaded profiles
    next_try_in_s: float | None = None
    log: str | None = None
    log_tail: list[str] | None = None  #: last log lines, when failed
    container: dict[str, Any] | None = None  #: a container's state, from its launcher (None: native)
    vram_mib: int | None = None  #: GPU memory of the server and its children (nvidia-smi/rocm-smi)
    gpus: list[int] | None = None  #: indexes of the GPUs it uses, where the tool says
    latency_ms: float | None = None  #: a remote server: how long its probe took to answer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tail(path: str | Path, n: int = 30) -> str:
    """The last ``n`` lines of a file (read from the end; logs can be large)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(block, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
        return "\n".join(data.decode(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def entry(config: Config, paths: Paths, name: str) -> StatusEntry:
    """One profile's status from its state file, its keeper lock and its processes."""
    prof = config.profiles.get(name)
    if prof is not None and prof.remote:
        return remote_entry(prof)
    # the lock first: a keeper writes its last state before its lock goes, so a state read after
    # the lock was seen free is final (the other order can pair a stale `starting` with no keeper)
    held = is_held(paths.lock_file(name))
    st = read_state(paths.state_file(name), name)
    e = StatusEntry(name=name, engine=prof.engine if prof else "", state="stopped", pid=None,
                    port=prof.port if prof else None, url=prof.url if prof else None,
                    model=prof.model if prof else None, uptime_s=None, restarts=0, exit_code=None,
                    exit_signal=None, health=None, supervised=held, defined=prof is not None)
    if st is None:
        if held:
            e.state, e.message = "starting", "keeper alive; state not written yet"
        return e
    e.engine = st.engine or e.engine
    e.restarts, e.exit_code, e.exit_signal = st.restarts, st.exit_code, st.exit_signal
    e.message, e.reason, e.log = st.message, st.reason, st.log or None
    e.state = st.state
    if st.state in LIVE_STATES or st.pid:
        e.port, e.url, e.model, e.health = st.port, st.url, st.model, st.health
    server = st.server_id()
    server_alive = bool(server and server.alive())
    if st.state in LIVE_STATES and not held:
        if server_alive:
            e.message = f"keeper not running: the server is unsupervised; `llmctl down {name}` stops it"
        else:
            e.state, e.message = "failed", "keeper and server are gone (killed outside llmctl?)"
            e.reason = Why.KEEPER_GONE.value
    if server_alive:
        e.pid = st.pid
        if st.state in STARTED and st.started_mono is not None and same_boot(st):
            e.uptime_s = round(max(0.0, time.monotonic() - st.started_mono), 3)
    if st.state in LIVE_STATES or st.pid:
        e.container = container_state(paths, name)
    if e.state == "failed" and st.log:
        e.log_tail = tail(st.log, 10).splitlines()
    if e.state == State.BACKOFF and st.next_try_wall:
        e.next_try_in_s = round(max(0.0, st.next_try_wall - time.time()), 1)
        if st.reason == Why.RESTARTING:  # counted down as of now, not as of the crash
            e.message = backoff_note(st.message, e.next_try_in_s)
    return e


def remote_entry(prof: Profile) -> StatusEntry:
    """A remote profile's row: no keeper, no process; its probe says running or unreachable."""
    from ..engines.remote import probe

    found = probe(prof)
    return StatusEntry(name=prof.name, engine=prof.engine, state=found.state, pid=None, port=prof.port,
                       url=prof.url, model=prof.model or None, uptime_s=None, restarts=0, exit_code=None,
                       exit_signal=None, health="ok" if found.reachable else "down",
                       message=found.message or f"remote: {found.path} answered in {found.latency_ms:g} ms",
                       latency_ms=found.latency_ms)


def quick_state(paths: Paths, name: str) -> State | None:
    """A server's state when the lock and the state file alone settle it, without looking at
    processes (what `run` needs, cheaply): a keeper holds the lock -> its recorded state; no
    keeper and no live record -> stopped. None: ask :func:`entry`."""
    held = is_held(paths.lock_file(name))  # before the state: see entry()
    st = read_state(paths.state_file(name), name)
    if held and st is not None:
        return State(st.state)
    if not held and (st is None or st.state == State.STOPPED and not st.pid):
        return State.STOPPED
    return None


def container_state(paths: Paths, name: str) -> dict[str, Any] | None:
    """What the server's launcher says of how it runs (a container's Running, Status, ExitCode,
    OOMKilled, Pid), None for a launcher with nothing to say (native) or without a spec."""
    try:
        spec = LaunchSpec.read(paths.spec_file(name))
    except (OSError, ValueError, TypeError):
        return None
    from ..engines.registry import launcher_for

    try:
        launcher = launcher_for(spec.launcher)
    except ValueError:  # a spec from a launcher this llmctl does not have
        return None
    return launcher.inspect(spec)


def add_gpu_usage(entries: list[StatusEntry]) -> None:
    """Fill vram_mib/gpus of live servers from nvidia-smi or rocm-smi, when either exists."""
    live = [e for e in entries if e.pid]
    if not live:
        return
    import shutil

    if not (shutil.which("nvidia-smi") or shutil.which("rocm-smi")):
        return
    from ..gpu.probe import probe

    report = probe()
    for e in live:
        e.vram_mib, gpus = report.usage_of(server_pids(e))
        e.gpus = gpus or None


def server_pids(e: StatusEntry) -> set[int]:
    """The processes whose GPU memory is the server's: its recorded pid and descendants, and for
    a server in a container the container's ``Pid`` and descendants too. The recorded pid is
    then only the container CLI's client: the container's processes are the container runtime's
    children (containerd-shim), not the client's, and the host sees them by pid."""
    import psutil

    roots = [e.pid]
    cpid = (e.container or {}).get("Pid")
    if isinstance(cpid, int) and not isinstance(cpid, bool) and cpid > 0:
        roots.append(cpid)
    pids: set[int] = set()
    for root in roots:
        if not root:
            continue
        pids.add(root)
        try:
            pids |= {c.pid for c in psutil.Process(root).children(recursive=True)}
        except psutil.Error:
            pass
    return pids


def same_boot(st: ServerState) -> bool:
    """Monotonic times in ``st`` are this boot's: by boot id, else (older records) by boot time."""
    if st.boot_id is not None:
        from .identity import boot_id

        return st.boot_id == boot_id()
    import psutil

    return st.boot_time is None or abs(psutil.boot_time() - st.boot_time) < 5
