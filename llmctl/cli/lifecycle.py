"""`up`, `down`, `restart`, `status`, `logs`."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..output import Output
from .common import JsonOpt, NameArg, NamesArg, OptNamesArg, handle_errors, load_config


def _check_names(names) -> None:
    """Every name from the command line follows the naming rule before anything becomes a path
    (`down /some/dir/app` must not reach /some/dir)."""
    from ..names import check_name

    for n in names or []:
        check_name(n)


def _supervisor(config=None, out: Output | None = None):
    from ..supervise.control import Supervisor

    return Supervisor(config, warn=out.warn if out else None)


class _Progress:
    """Progress of `up`: a live table on a terminal, plain lines on stderr otherwise."""

    def __init__(self, out: Output, names: list[str]) -> None:
        self.out, self.names = out, names
        self.states = {n: "waiting" for n in names}
        self.t0 = time.monotonic()
        self.live = None
        if out.err_tty:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self, console=Console(file=out.err), refresh_per_second=10, transient=True)
            self.live.start()

    def __rich__(self):
        from rich.spinner import Spinner
        from rich.table import Table

        t = Table.grid(padding=(0, 2))
        for n in self.names:
            s = self.states[n]
            t.add_row(Spinner("dots") if s in ("waiting", "starting") else "•", n, s,
                      f"{time.monotonic() - self.t0:.1f}s")
        return t

    def __call__(self, name: str, state: str, elapsed: float) -> None:
        self.states[name] = state
        if self.live is None:
            self.out.info(f"{name}: {state} ({elapsed:.2f}s)")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def up(names: NamesArg,
       timeout: Annotated[Optional[float], typer.Option(
           help="Seconds to wait for health (overrides start_timeout).")] = None,
       force: Annotated[bool, typer.Option(
           "--force", help="Start even if the GPU memory estimate says it won't fit.")] = False,
       pull: Annotated[bool, typer.Option(
           "--pull", help="Pull missing models (catalog aliases, hf: references) first.")] = False,
       json: JsonOpt = False) -> None:
    """Start profiles in parallel, detached; return once each answers its health check."""
    _check_names(names)
    out = Output(json)
    config = load_config()
    sup = _supervisor(config, out)
    if pull:
        from ..models.progress import progress_for
        from ..models.pull import ensure_model

        for prof in [config.profile(n) for n in dict.fromkeys(names)]:  # every name known before any pull
            if not prof.remote:  # a remote server has its model already
                ensure_model(prof, sup.paths, progress=progress_for(out))
    progress = _Progress(out, [n for n in dict.fromkeys(names) if not config.profile(n).remote])
    try:
        results = sup.start(names, timeout=timeout, progress=progress, force=force)
    finally:
        progress.close()
    if json:
        out.data([_row(r) for r in results])
        return
    for r in results:
        if r.note:  # a remote profile: not started
            out.text(r.note)
        elif r.outcome == "already-running":
            out.text(f"{r.name}: already running at {r.url} (pid {r.pid})")
        else:
            out.text(f"{r.name}: running at {r.url} (pid {r.pid}, ready in {r.seconds:.2f}s)")


def down(names: OptNamesArg = None,
         all_: Annotated[bool, typer.Option("--all", help="Stop every server llmctl has a record of.")] = False,
         json: JsonOpt = False) -> None:
    """Stop servers: stop signal, SIGKILL to the whole group after stop_timeout. Idempotent."""
    _check_names(names)
    out = Output(json)
    if names and all_:
        raise UsageError("give profile names or --all, not both")
    config = _config_if_readable() if names else None  # remote profiles are skipped, with a note
    if all_:
        targets = None
    elif names:
        targets = names
    else:
        config = load_config()
        targets = list(config.profiles)
    results = _supervisor(config).stop(targets)
    if json:
        out.data([_row(r) for r in results])
        return
    for r in results:
        if r.note:
            out.text(r.note)
        elif r.outcome == "stopped":
            out.text(f"{r.name}: stopped" + (" (needed SIGKILL)" if r.killed else ""))
        else:
            out.text(f"{r.name}: not running")


def _row(result) -> dict:
    """A start or stop result for --json: its fields, ``note`` only where there is one (remote)."""
    d = dict(result.__dict__)
    if not d.get("note"):
        d.pop("note", None)
    return d


def _config_if_readable():
    """The profiles, or None when they cannot be loaded (`down NAME` works all the same)."""
    from ..errors import LlmctlError

    try:
        return load_config()
    except LlmctlError:
        return None


def restart(names: NamesArg,
            timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for health.")] = None,
            json: JsonOpt = False) -> None:
    """Stop, then start profiles again (picking up profile changes)."""
    _check_names(names)
    config = load_config()
    for n in names:
        config.profile(n)
    _supervisor(config).stop(names)
    up(names, timeout=timeout, force=False, pull=False, json=json)


def status(names: OptNamesArg = None, json: JsonOpt = False) -> None:
    """Show each profile's state. Exit 0 if all asked-for profiles are running, else 3."""
    from .common import STATE
    from .status_view import show_status

    _check_names(names)
    code = show_status(names or None, json, STATE.files)
    if code:
        raise typer.Exit(code)


def logs(name: NameArg,
         follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("-n", "--lines", help="Lines to show from the end.")] = 50) -> None:
    """Print a server's log: its output plus the notes of its keeper."""
    from ..errors import UnknownProfile
    from ..paths import Paths
    from ..supervise.status import tail

    _check_names([name])
    paths = Paths.from_env()
    _launcher_logs(paths, name, lines, follow)  # a live container: its own logs (execs; no return)
    path = paths.log_file(name)
    if not path.exists():
        raise UnknownProfile(f"no log for {name!r} at {path} (has it ever been started?)")
    out = Output()
    text = tail(path, lines) if lines > 0 else ""
    if text:
        out.text(text)
    if not follow:
        return
    import os

    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        ino = os.fstat(f.fileno()).st_ino
        while True:
            chunk = f.read()
            if chunk:
                out.out.write(chunk.decode(errors="replace"))
                out.out.flush()
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                time.sleep(0.2)
                continue
            if st.st_ino != ino or st.st_size < f.tell():  # rotated or truncated
                f.seek(0)
                ino = st.st_ino
            time.sleep(0.2)


def _launcher_logs(paths, name: str, lines: int, follow: bool) -> None:
    """Where the server's launcher has its own logs command (a live container's), exec it."""
    from ..engines.registry import launcher_for
    from ..engines.spec import LaunchSpec

    try:
        spec = LaunchSpec.read(paths.spec_file(name))
        argv = launcher_for(spec.launcher).logs_argv(spec, lines, follow)
    except (OSError, ValueError, TypeError):
        return
    if argv is None:
        return
    import os
    import sys

    sys.stdout.flush()
    os.execvp(argv[0], argv)


def plan(names: NamesArg,
         vram_budget: Annotated[Optional[str], typer.Option(
             help="Compare with this budget (e.g. 22GiB) instead.")] = None,
         together: Annotated[bool, typer.Option(
             "--together", help="Also: which sets of them fit at once on each GPU, and what a request "
             "for each would evict (the gateway's own policy).")] = False,
         json: JsonOpt = False) -> None:
    """Estimate the GPU memory the profiles need and whether it fits; starts nothing."""
    from ..gpu.budget import make_plan
    from ..units import format_size

    out = Output(json)
    config = load_config()
    remote = [n for n in dict.fromkeys(names) if config.profile(n).remote]
    for n in remote:
        out.note(f"{n}: a remote server; its memory is not this machine's (left out)")
    p = make_plan(config, [n for n in names if n not in remote], budget=vram_budget, hub=True)
    t = _together(config, p, vram_budget) if together else None
    if json:
        out.data({**p.to_dict(), **({"together": t.to_dict()} if t is not None else {})})
        return

    def part(e, n: int) -> str:
        return format_size(n) if e.total is not None else ""  # an unknown estimate has no parts

    out.table(["profile", "method", "weights", "kv cache", "extra", "layers on GPU", "ctx", "total"],
              [[e.profile, e.method, part(e, e.weights), part(e, e.kv_cache), part(e, e.extra),
                f"{e.offloaded_layers}/{e.block_count}" if e.block_count else "", e.ctx or "",
                format_size(e.total)] for e in p.estimates])
    for g in p.per_gpu:
        out.text(f"GPU {g.gpu}: {', '.join(g.profiles)}: {format_size(g.need)} of {format_size(g.free)} free")
    if p.anywhere:
        out.text(f"on any GPU: {format_size(p.anywhere)} of {format_size(p.left)} left free")
    out.text(f"needed {p.need_text()}; limit: {p.limit_text()}: {p.verdict()}")
    for n in p.problems:
        out.info(n)
    for n in p.notes:
        out.note(n)
    if t is not None:
        _show_together(out, t)


def _together(config, p, vram_budget: str | None):
    """``plan --together``: the estimates against the per-GPU budgets, the one budget, or each
    GPU's free memory."""
    from ..gateway.together import ALL, together
    from ..gpu.placement import budget_by_gpu, budget_bytes, is_free

    value = vram_budget or config.defaults.vram_budget
    if not value or is_free(value):  # each GPU's free memory, with what llmctl's servers hold there
        from ..supervise.control import Supervisor

        caps = Supervisor(config).gpu_capacity()
    else:
        caps = budget_by_gpu(value) or {ALL: budget_bytes(value) or 0}
    sizes = {e.profile: e.total for e in p.estimates if e.total}
    return together(sizes, caps or {ALL: 0})


def _show_together(out: Output, t) -> None:
    for gpu, sets in t.sets.items():
        where = "all GPUs (one budget)" if gpu == "all" else f"GPU {gpu}"
        out.text(f"fit together on {where}: " + ("; ".join(", ".join(s) for s in sets) or "none"))
    for name, victims in t.evicts.items():
        if name in t.loaded:
            out.text(f"{name}: loaded on {', '.join(t.loaded[name])} after asking for each in turn")
        elif victims is None:
            out.text(f"{name}: fits on no GPU")
        else:
            out.text(f"{name}: a request would evict {', '.join(victims) or 'nothing'}")


COMMANDS = {fn.__name__: handle_errors(fn) for fn in (up, down, restart, status, logs, plan)}
