"""Request parameters: merge ``defaults.sampling`` < task < command line, and spell the result
for each engine (the OpenAI-style request body, the llama.cpp tools' flags).

One table, :data:`SAMPLING`, says how every sampling key is spelled in a llama-server request,
a vLLM request and a llama.cpp command line, so both modes of `run` get the same values.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..profiles.schema import Sampling, Task

#: key -> (llama-server request field, vLLM request field or None, llama.cpp tool flag)
SAMPLING: dict[str, tuple[str, str | None, str]] = {
    "temperature": ("temperature", "temperature", "--temp"),
    "top_p": ("top_p", "top_p", "--top-p"),
    "top_k": ("top_k", "top_k", "--top-k"),
    "min_p": ("min_p", "min_p", "--min-p"),
    "presence_penalty": ("presence_penalty", "presence_penalty", "--presence-penalty"),
    "frequency_penalty": ("frequency_penalty", "frequency_penalty", "--frequency-penalty"),
    "repeat_penalty": ("repeat_penalty", "repetition_penalty", "--repeat-penalty"),
    "mirostat": ("mirostat", None, "--mirostat"),
    "mirostat_tau": ("mirostat_tau", None, "--mirostat-ent"),
    "mirostat_eta": ("mirostat_eta", None, "--mirostat-lr"),
    "seed": ("seed", "seed", "--seed"),
    "max_tokens": ("max_tokens", "max_tokens", "-n"),
    "stop": ("stop", "stop", "-r"),  # repeated once per stop string
}
SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(Sampling))
#: keys `--set` accepts: the sampling keys and the system prompt
SETTABLE = SAMPLING_KEYS + ("system",)
_TYPES = {f.name: f.type for f in dataclasses.fields(Sampling)}


@dataclass
class Params:
    """What a request carries besides the prompt: sampling values (only those set) and the
    system prompt. ``origin`` says where each value came from (defaults, task, command line)."""

    sampling: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    origin: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"sampling": dict(self.sampling), "system": self.system, "origin": dict(self.origin)}


def merge(defaults: Sampling | None, task: Task | None, overrides: dict[str, Any] | None = None) -> Params:
    """``defaults.sampling`` < task < ``overrides`` (command line). An override of None removes
    the value (the engine's own default applies); ``system: ""`` removes the system prompt."""
    p = Params()
    for origin, src in (("defaults", defaults), ("task", task)):
        if src is None:
            continue
        for key in SAMPLING_KEYS:
            value = getattr(src, key)
            if value is not None:
                p.sampling[key] = value
                p.origin[key] = origin
    if task is not None and task.system is not None:
        p.system, p.origin["system"] = task.system, "task"
    for key, value in (overrides or {}).items():
        if key not in SETTABLE:
            raise UsageError(_unknown(key))
        if key == "system":
            p.system = value or None
            p.origin["system"] = "command line"
        elif value is None:
            p.sampling.pop(key, None)
            p.origin[key] = "command line"
        else:
            p.sampling[key] = coerce(key, value)
            p.origin[key] = "command line"
    # keep one order (the schema's) whatever the sources' order
    p.sampling = {k: p.sampling[k] for k in SAMPLING_KEYS if k in p.sampling}
    return p


def _unknown(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, SETTABLE, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown parameter {key!r}{hint}; known: {', '.join(SETTABLE)}"


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` items -> overrides. Values are read as JSON when they parse
    (numbers, ``null``, ``["a", "b"]``), else taken as text; ``null`` unsets the key."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected key=value")
        if key not in SETTABLE:
            raise UsageError(f"--set {item!r}: {_unknown(key)}")
        if key == "system":
            out[key] = raw
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = None if value is None else coerce(key, value)
    return out


def coerce(key: str, value: Any) -> Any:
    """Check and convert one sampling value to the schema's type."""
    tp = str(_TYPES.get(key, ""))
    try:
        if "list" in tp:  # stop
            if isinstance(value, str):
                return [value]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError
        if isinstance(value, bool):
            raise ValueError
        if "int" in tp:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if "float" in tp:
            return float(value)
    except (TypeError, ValueError):
        want = "a list of strings" if "list" in tp else tp.split(" |")[0]
        raise UsageError(f"parameter {key}: {value!r} is not {want}") from None
    return value


def request_fields(p: Params, engine: str) -> tuple[dict[str, Any], list[str]]:
    """The sampling fields of a chat/completions body for ``engine``, and the keys left out
    (vLLM has no mirostat)."""
    body: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in p.sampling.items():
        llama_name, vllm_name, _ = SAMPLING[key]
        name = vllm_name if engine == "vllm" else llama_name
        if name is None:
            dropped.append(key)
        else:
            body[name] = value
    return body, dropped


def tool_flags(p: Params) -> list[str]:
    """The sampling flags of llama-completion / llama-cli / llama-mtmd-cli."""
    out: list[str] = []
    for key, value in p.sampling.items():
        flag = SAMPLING[key][2]
        if key == "stop":
            for s in value:
                out += [flag, s]
        else:
            out += [flag, str(value)]
    return out
