"""One-shot inference, usable without the CLI::

    from llmctl.inference import run_task
    result = run_task("Some text", task="summary", on_text=print)
    result.text, result.profile, result.mode, result.tokens_out

Parameters: ``defaults.sampling`` < the task < ``overrides`` (see :mod:`.params`); routing: see
:mod:`.router`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..errors import NoServerAvailable
from ..profiles.schema import Config, Profile
from .client import ChatResult, Unreachable
from .params import Params, merge
from .router import Plan, Route, plan

Note = Callable[[str], None]


@dataclass
class RunResult:
    """What `run --json` prints."""

    text: str
    task: str | None
    profile: str
    mode: str  #: server | cli
    engine: str
    model: str  #: the profile's model reference
    url: str | None  #: server mode: the server's base URL
    tool: str | None  #: cli mode: llama-completion, llama-cli or llama-mtmd-cli
    tokens_in: int | None
    tokens_out: int | None
    finish_reason: str | None
    timings: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    reasoning: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["reasoning"]:
            d.pop("reasoning")
        return d


def load(config: Config | None, files: list[str] | None) -> Config:
    if config is not None:
        return config
    from ..profiles.loader import load as load_profiles

    return load_profiles(files)


def params_for(config: Config, p: Plan, overrides: dict[str, Any] | None) -> Params:
    return merge(config.defaults.sampling, p.task, overrides)


def _served_model(prof: Profile, deadline: float | None) -> str | None:
    """vLLM answers only to the name it serves; ask it when the profile does not say."""
    if prof.engine != "vllm" or prof.served_model_name:
        return None
    from .client import served_models
    from .request import auth_headers

    try:
        ids = served_models(prof.url, auth_headers(prof), name=prof.name, deadline=deadline)
    except Unreachable:
        raise
    except Exception:  # noqa: BLE001 - fall back to the reference as the name
        return None
    return ids[0] if ids else None


def _server(route: Route, params: Params, prompt: str, images: list[str] | None, deadline: float | None,
            on_text: Callable[[str], None] | None, note: Note) -> ChatResult:
    from .client import stream_chat
    from .request import chat_request

    prof = route.profile
    req = chat_request(prof, params, prompt, images, model=_served_model(prof, deadline))
    unused = [k for k in req.dropped if params.sampling.get(k) not in (0, None)]
    if unused:
        note(f"{prof.engine} has no {', '.join(unused)}; not sent")
    return stream_chat(req, name=prof.name, deadline=deadline, on_text=on_text)


def _cli(route: Route, params: Params, prompt: str, images: list[str] | None, deadline: float | None,
         on_text: Callable[[str], None] | None, note: Note, tool: str | None) -> tuple[ChatResult, str]:
    from .cli_runner import cli_command, run_cli

    cmd = cli_command(route.profile, params, prompt, images, tool=tool)
    if cmd.skipped_args:
        note(f"{cmd.tool} does not take {', '.join(cmd.skipped_args)} (from the profile's args:); left out")
    return run_cli(cmd, params, name=route.profile.name, deadline=deadline, on_text=on_text), cmd.tool


def run_task(prompt: str, *, task: str | None = None, profile: str | None = None, mode: str = "auto",
             overrides: dict[str, Any] | None = None, images: list[str] | None = None,
             config: Config | None = None, files: list[str] | None = None, timeout: float | None = 300.0,
             on_text: Callable[[str], None] | None = None, on_note: Note | None = None,
             tool: str | None = None) -> RunResult:
    """Answer ``prompt`` with the task's (or profile's) server, a fallback, or a one-shot tool.

    ``on_text`` gets the answer piece by piece as it is generated; ``on_note`` gets notes as
    plain sentences (fallback used, cli mode, a parameter the engine has no field for), for the
    caller to show or keep: the library prints nothing. ``overrides`` are command-line parameters (``--set``).
    ``tool`` forces the one-shot tool of cli mode (default: llama-completion, else llama-cli).
    Raises NoServerAvailable, EngineError, RequestTimeout, UsageError...
    """
    t0 = time.monotonic()
    deadline = t0 + timeout if timeout else None
    note = on_note or (lambda s: None)
    config = load(config, files)
    p = plan(config, task=task, profile=profile, mode=mode, images=bool(images))
    params = params_for(config, p, overrides)
    last: Unreachable | None = None
    for route in p.routes:
        prof = route.profile
        if route.why == "fallback" or route.mode == "cli" and mode == "auto":
            note(f"{p.describe_states()}; using {prof.name} ({route.mode} mode, {route.why})")
        elif route.external:
            note(f"{prof.name} answers at {prof.url} but was not started by llmctl")
        used_tool = None
        try:
            if route.mode == "server":
                res = _server(route, params, prompt, images, deadline, on_text, note)
            else:
                res, used_tool = _cli(route, params, prompt, images, deadline, on_text, note, tool)
        except Unreachable as exc:  # went away since `status`: try the next route
            last = exc
            note(exc.message)
            continue
        timings = dict(res.timings)
        timings["total_ms"] = round((time.monotonic() - t0) * 1000, 1)
        return RunResult(text=res.text, task=p.task.name if p.task else None, profile=prof.name,
                         mode=route.mode, engine=prof.engine, model=prof.model,
                         url=prof.url if route.mode == "server" else None, tool=used_tool,
                         tokens_in=res.tokens_in, tokens_out=res.tokens_out, finish_reason=res.finish_reason,
                         timings=timings, params=params.to_dict(), reasoning=res.reasoning or None)
    raise NoServerAvailable(f"no server could be reached ({last.message if last else p.describe_states()})",
                            profile=p.names[0])


def dry_run(prompt: str, *, task: str | None = None, profile: str | None = None, mode: str = "auto",
            overrides: dict[str, Any] | None = None, images: list[str] | None = None,
            config: Config | None = None, files: list[str] | None = None, tool: str | None = None) -> dict:
    """What `run` would send, in both modes, without sending anything: the route ``auto`` (or
    ``mode``) picks, the merged parameters, the server request (key redacted) with the argv the
    server is started with, and the one-shot tool's argv. For a profile where a mode is
    impossible, that part holds ``{"error": ...}``."""
    from ..errors import LlmctlError
    from .request import chat_request

    config = load(config, files)
    try:
        pl = plan(config, task=task, profile=profile, mode=mode, images=bool(images))
        route = pl.routes[0]
        chosen = {"mode": route.mode, "profile": route.profile.name, "why": route.why}
        prof = route.profile
    except NoServerAvailable as exc:
        from .router import pick_task

        t, names = pick_task(config, task, profile)
        pl = Plan(t, names)
        chosen = {"error": exc.message}
        prof = config.profiles[names[0]]
    params = params_for(config, pl, overrides)
    out: dict[str, Any] = {"task": pl.task.name if pl.task else None, "profile": prof.name,
                           "engine": prof.engine, "route": chosen, "candidates": pl.names,
                           "states": {n: pl.state_text(n) for n in pl.states}, "params": params.to_dict()}
    try:
        req = chat_request(prof, params, prompt, images)
        server: dict[str, Any] = req.public()
        server["dropped"] = req.dropped
        from ..engines.registry import ENGINES

        if prof.engine in ENGINES:  # a server llmctl starts
            server["argv"] = _server_argv(prof)
        out["server"] = server
    except LlmctlError as exc:
        out["server"] = {"error": exc.message}
    try:
        from .cli_runner import cli_command

        out["cli"] = cli_command(prof, params, prompt, images, tool=tool).public()
    except LlmctlError as exc:
        out["cli"] = {"error": exc.message}
    return out


def _server_argv(prof: Profile) -> list[str] | dict:
    """The argv `up` starts this profile's server with, from the same builder (its engine and
    launcher); nothing is started or written."""
    from ..engines.launch import spec_for
    from ..errors import LlmctlError
    from ..paths import Paths

    try:
        return spec_for(prof, Paths.from_env()).argv
    except LlmctlError as exc:
        return {"error": exc.message}
