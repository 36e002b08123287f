"""`profiles list | show | validate`."""

from __future__ import annotations

import dataclasses

import typer

from ..output import Output
from .common import JsonOpt, NameArg, handle_errors, load_config

app = typer.Typer(rich_markup_mode=None, help="List, show and check profiles.", no_args_is_help=True)


def public_dict(obj) -> dict:
    """A profile or task as the user would write it, with every default filled in."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        v = getattr(obj, f.name)
        out[f.name] = public_dict(v) if dataclasses.is_dataclass(v) else v
    return out


@app.command("list")
@handle_errors
def list_(json: JsonOpt = False) -> None:
    """One line per profile and task."""
    cfg = load_config()
    out = Output(json)
    if json:
        out.data({"files": cfg.files,
                  "profiles": [{"name": p.name, "engine": p.engine, "model": p.model, "url": p.url,
                                "backend": p.backend, "source": p.where()} for p in cfg.profiles.values()],
                  "tasks": [{"name": t.name, "profile": t.profile, "fallback": t.fallback, "source": t.where()}
                            for t in cfg.tasks.values()]})
        return
    out.table(["profile", "engine", "model", "url", "backend", "file"],
              [[p.name, p.engine, p.model, p.url, p.backend, p.where()] for p in cfg.profiles.values()])
    if cfg.tasks:
        out.text("")
        out.table(["task", "profile", "fallback"],
                  [[t.name, t.profile, ", ".join(t.fallback)] for t in cfg.tasks.values()])


@app.command("show")
@handle_errors
def show(name: NameArg, json: JsonOpt = False) -> None:
    """A profile resolved, with every default filled in (YAML, or JSON with --json)."""
    cfg = load_config()
    prof = cfg.profile(name)
    data = public_dict(prof)
    data["start_timeout"] = prof.effective_start_timeout  # the engine's default when unset
    from ..errors import LlmctlError
    from ..models.resolve import resolve_model

    try:
        model_path, missing = str(resolve_model(prof)), None
    except LlmctlError as exc:  # not on disk yet: say why, show the rest anyway
        model_path, missing = None, exc.message
    out = Output(json)
    if json:
        out.data({"name": name, "source": prof.where(), **data, "model_path": model_path, "model_missing": missing})
        return
    import yaml

    out.text(f"# {name}, from {prof.where()}")
    out.text(f"# model file: {model_path}" if model_path else f"# model: {missing}")
    out.text(yaml.safe_dump({name: data}, sort_keys=False, default_flow_style=False).rstrip())


@app.command("validate")
@handle_errors
def validate(json: JsonOpt = False) -> None:
    """Check every profile file; exit 4 with file:line errors if anything is wrong."""
    cfg = load_config()
    check_engine_flags(cfg)
    out = Output(json)
    if json:
        out.data({"ok": True, "files": cfg.files, "profiles": len(cfg.profiles), "tasks": len(cfg.tasks)})
        return
    if not cfg.files:
        out.warn("no profile files found (see `llmctl --help` for where they are looked for)")
    out.text(f"ok: {len(cfg.profiles)} profile(s), {len(cfg.tasks)} task(s) in {len(cfg.files)} file(s)")


def check_engine_flags(cfg) -> None:
    """What `up` would refuse in `args:` and `env:` (flags llmctl sets itself, flags with
    dangerous capabilities), for every llama-server profile, all reported at once."""
    from ..engines.llama_server import check_profile
    from ..errors import ProfileError

    problems = []
    for prof in cfg.profiles.values():
        if prof.engine != "llama-server":
            continue
        try:
            check_profile(prof)
        except ProfileError as err:
            problems.append(err.message)
    if len(problems) == 1:
        raise ProfileError(problems[0])
    if problems:
        raise ProfileError(f"{len(problems)} problem(s) in the profile files", detail="\n".join(problems))


COMMANDS = {"profiles": app}
