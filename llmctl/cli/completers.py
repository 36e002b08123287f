"""The dynamic completers of names (profiles, tasks, models) that options and arguments hand
to Typer: at each TAB the shell runs `llmctl` with `_LLMCTL_COMPLETE` set (see
`llmctl completion`), and these answer from the user's own files. Apart from the completion
command, so that option aliases can name them without importing that command."""

from __future__ import annotations

import typer  # the completers' `ctx` annotation, which Typer resolves

from .context import load_config


def _config():
    try:
        return load_config()
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return None


def complete_profiles(ctx: typer.Context, incomplete: str) -> list[str]:
    cfg = _config()
    names = list(cfg.profiles) if cfg else []
    try:  # plus servers llmctl has a record of (for `down`, `logs`)
        from ..paths import Paths

        names += [p.stem for p in Paths.from_env().state.glob("*.json") if p.stem not in names]
    except OSError:
        pass
    return [n for n in names if n.startswith(incomplete)]


def complete_tasks(ctx: typer.Context, incomplete: str) -> list[str]:
    cfg = _config()
    return [n for n in (cfg.tasks if cfg else {}) if n.startswith(incomplete)]


def complete_models(ctx: typer.Context, incomplete: str) -> list[str]:
    try:
        from ..paths import Paths

        root = Paths.from_env().models
        names = [p.parent.name for p in root.glob("*/manifest.json")]
    except OSError:
        names = []
    return [n for n in sorted(names) if n.startswith(incomplete)]


def init_completion() -> None:
    """Use Typer's completion classes (public module typer.completion): their scripts and
    their answers speak the same protocol."""
    import typer.completion

    typer.completion.completion_init()
