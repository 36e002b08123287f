"""`status`, shared by the Typer command and the fast path (no Typer import)."""

from __future__ import annotations

from ..errors import ExitCode
from ..output import Output


def _fmt_uptime(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_vram(e) -> str:
    if e.vram_mib is None:
        return ""
    where = f" (GPU {','.join(map(str, e.gpus))})" if e.gpus else ""
    return f"{e.vram_mib} MiB{where}"


def show_status(names: list[str] | None, json: bool, files: list[str] | None) -> int:
    """Print the status table or JSON; return the exit code (0 all running, 3 otherwise).
    Raises llmctl errors (unknown profile, broken files without names)."""
    from ..errors import ProfileError
    from ..profiles.loader import load
    from ..supervise.control import Supervisor

    out = Output(json)
    try:
        config = load(files)
    except ProfileError as err:
        if not names:
            raise
        out.warn(f"profiles not loaded ({err.message}); showing recorded state only")
        config = None
    entries = Supervisor(config).status(names or None)
    if config is not None and not config.files and not names and not entries:
        if json:
            out.data([])
        out.warn(no_profiles_hint())
        return int(ExitCode.NOT_RUNNING)
    if json:
        out.data([e.to_dict() for e in entries])
    else:
        rows = []
        any_gpu = any(e.vram_mib is not None for e in entries)
        for e in entries:
            last = ""
            if e.exit_signal:
                last = f"signal {e.exit_signal}"
            elif e.exit_code is not None:
                last = f"exit {e.exit_code}"
            rows.append([e.name, e.state, e.pid, e.url or "", e.model or "", _fmt_uptime(e.uptime_s),
                         e.restarts, last] + ([_fmt_vram(e)] if any_gpu else []) + [_note(e)])
        cols = ["name", "state", "pid", "url", "model", "uptime", "restarts", "last exit"]
        out.table(cols + (["vram"] if any_gpu else []) + ["note"], rows)
        for e in entries:
            if e.log_tail:
                out.info(f"--- {e.name} failed; last lines of {e.log} ---\n" + "\n".join(e.log_tail))
    asked = [e for e in entries if names or e.defined]
    if not asked or any(e.state != "running" for e in asked):
        return int(ExitCode.NOT_RUNNING)
    return 0


def _note(e) -> str:
    """The state's message (`status` counts a backoff down to the next try as of now)."""
    return e.message


def no_profiles_hint() -> str:
    """Where llmctl looked for profile files, and how to make one."""
    from ..paths import Paths

    user = Paths.from_env().config / "profiles"
    return ("no profile file found; looked for ./llmctl.yaml, ./profiles/*.yaml and "
            f"{user}/*.yaml (or give -f FILE / LLMCTL_PROFILES). Make one, e.g. llmctl.yaml:\n"
            "  profiles:\n    light: {model: PATH/TO/MODEL.gguf, port: 8081}\n"
            "then `llmctl profiles validate`; the README's Profiles section lists every key")
