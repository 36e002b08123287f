"""Where a request goes: the request's ``model`` names a task, a profile, or a profile's served
model name (``alias:``, vLLM's ``served_model_name:``, the model reference), in that order of
precedence. A task sends the request to its profile, then its ``fallback:`` list; a profile to
itself. The body is then adjusted for the chosen server (:func:`prepare_body`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..inference.params import Params, merge, request_fields
from ..inference.request import model_name
from ..profiles.schema import Config, Profile, Task
from .errors import BadRequest, UnknownModel

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"


@dataclass
class Target:
    """A resolved request: the candidates in order and the parameters that fill in the body."""

    model: str  #: what the client asked for
    task: Task | None
    candidates: list[str]  #: profile names: the task's profile, then its fallbacks
    params: Params


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.names: dict[str, tuple[str, str]] = {}  #: model name -> (task|profile, name)
        for t in config.tasks:
            self.names[t] = ("task", t)
        for p in config.profiles:
            self.names.setdefault(p, ("profile", p))
        for prof in config.profiles.values():
            for alias in served_names(prof):
                self.names.setdefault(alias, ("profile", prof.name))
        self._targets: dict[str, Target] = {}

    def resolve(self, model: Any) -> Target:
        """The target of ``model``; no ``model``: the task named ``default``, else the only profile."""
        if model is None or model == "":
            if "default" in self.config.tasks:
                model = "default"
            elif len(self.config.profiles) == 1:
                model = next(iter(self.config.profiles))
            else:
                raise BadRequest("the request names no `model`: give a task or profile name (see GET /v1/models)")
        if not isinstance(model, str):
            raise BadRequest("`model` must be a string")
        cached = self._targets.get(model)
        if cached is not None:
            return cached
        kind_name = self.names.get(model)
        if kind_name is None:
            known = ", ".join(sorted(set(self.config.tasks) | set(self.config.profiles))) or "none"
            raise UnknownModel(f"no task, profile or served model named {model!r} (known: {known})")
        kind, name = kind_name
        if kind == "task":
            task = self.config.tasks[name]
            target = Target(model, task, list(dict.fromkeys([task.profile, *task.fallback])),
                            merge(self.config.defaults.sampling, task))
        else:
            target = Target(model, None, [name], merge(self.config.defaults.sampling, None))
        self._targets[model] = target
        return target


def served_names(profile: Profile) -> list[str]:
    """Names a client may use for this profile besides its own."""
    names = [model_name(profile)]
    if profile.alias:
        names.append(profile.alias)
    if profile.served_model_name:
        names.append(profile.served_model_name)
    return list(dict.fromkeys(n for n in names if n and n != profile.name))


def prepare_body(endpoint: str, body: dict[str, Any], target: Target, profile: Profile,
                 upstream_model: str | None = None) -> dict[str, Any]:
    """The body sent upstream: ``model`` set to the name the server answers to; for chat and
    completions, every parameter of the task (and ``defaults.sampling``) the client did not send
    (what the client sent wins, even ``null``); for chat, the task's ``system:`` prompt when the
    client sent no system message."""
    out = dict(body)
    out["model"] = upstream_model or model_name(profile)
    if not out["model"]:  # a remote profile without `model:`: the server answers with its own
        del out["model"]
    if endpoint not in (CHAT, COMPLETIONS):
        return out
    fields, _dropped = request_fields(target.params, profile.engine)
    for key, value in fields.items():
        if key in out or (key == "max_tokens" and "max_completion_tokens" in out):
            continue
        if key == "repetition_penalty" and "repeat_penalty" in out:
            continue
        out[key] = value
    if endpoint == CHAT and target.params.system:
        messages = out.get("messages")
        if isinstance(messages, list) and not any(
                isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
            out["messages"] = [{"role": "system", "content": target.params.system}, *messages]
    return out


def check_body(endpoint: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    need = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}.get(endpoint)
    if need and need not in body:
        raise BadRequest(f"the request has no `{need}`")
    return body
