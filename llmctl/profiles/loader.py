"""Read profile files: search order, strict YAML, every error with file:line and key.

PyYAML builds a node tree with positions (``yaml.compose`` with the safe loader); this module
walks that tree against the dataclasses of :mod:`llmctl.profiles.schema`, rejecting duplicate
keys (PyYAML would keep the last silently), unknown keys (with a close-match suggestion) and
wrong types. All problems of all files are collected and reported together; nothing starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from ..errors import ProfileError
from .schema import NAME_MAX, NAME_RE, REQUIRED, Config, Defaults, Group, Profile, Task

TOP_KEYS = ("profiles", "tasks", "groups", "defaults")
SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "seq", "map",
                                                "merge", "timestamp")}


@dataclasses.dataclass
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.file}:{self.line}:{key} {self.message}"


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._loader = yaml.SafeLoader("")

    def add(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(Problem(self.file, line, key, message))

    def construct(self, node: yaml.Node) -> Any:
        return self._loader.construct_document(node)

    def pairs(self, node: yaml.MappingNode, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """The mapping's (key, key node, value node), rejecting duplicate keys, honouring `<<`."""
        seen: dict[str, yaml.Node] = {}
        for knode, _ in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                continue
            k = str(knode.value)
            if k in seen:
                self.add(knode, _join(where, k),
                         f"duplicate key (first at line {seen[k].start_mark.line + 1})")
            seen[k] = knode
        try:
            self._loader.flatten_mapping(node)
        except yaml.YAMLError as exc:
            self.add(node, where, f"bad merge: {exc}")
        out: dict[str, tuple[str, yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            k = knode.value if isinstance(knode, yaml.ScalarNode) else str(self.construct(knode))
            out[str(k)] = (str(k), knode, vnode)  # later wins: own keys follow merged ones
        return list(out.values())


def _close(word: str, options, n: int = 1, cutoff: float = 0.6) -> list[str]:
    import difflib  # only when something is misspelled

    return difflib.get_close_matches(word, list(options), n=n, cutoff=cutoff)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _convert(ctx: _Ctx, tp: Any, node: yaml.Node, where: str) -> Any:
    """Check ``node`` against type ``tp``; return the value or raise _Bad."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return None
        last = None
        for a in args:
            try:
                return _convert(ctx, a, node, where)
            except _Bad as exc:
                last = exc
        if len(args) == 1 and last is not None:
            raise last
        raise _Bad(f"expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(node, yaml.MappingNode):
            raise _Bad("expected a mapping")
        return build(ctx, tp, node, where)
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(node, yaml.ScalarNode) and item is str and tp is not None and where.endswith("stop"):
            return [_convert(ctx, str, node, where)]
        if not isinstance(node, yaml.SequenceNode):
            raise _Bad(f"expected {_type_name(tp)}")
        return [_convert(ctx, item, n, f"{where}[{i}]") for i, n in enumerate(node.value)]
    if origin is dict:
        if not isinstance(node, yaml.MappingNode):
            raise _Bad("expected a mapping")
        _, vt = get_args(tp)
        out = {}
        for k, knode, vnode in ctx.pairs(node, where):
            word = _yaml11_word(vnode)
            if vt is str:
                v = ctx.construct(vnode)
                if isinstance(v, (dict, list)) or v is None:
                    ctx.add(vnode, _join(where, k), "expected a string, number or boolean")
                    continue
                # `FOO: on` is the text "on", as written (not "true")
                out[k] = v if isinstance(v, str) else (word or str(v).lower() if isinstance(v, bool) else str(v))
            else:
                if isinstance(vnode, yaml.MappingNode):
                    ctx.pairs(vnode, _join(where, k))  # duplicate check only
                # `args: {flash-attn: on}` means `--flash-attn on`; only true/false mean bare/absent
                out[k] = word if word is not None else ctx.construct(vnode)
        return out
    if not isinstance(node, yaml.ScalarNode):
        raise _Bad(f"expected {_type_name(tp)}")
    value = ctx.construct(node)
    if isinstance(value, bool) and origin is Literal and value is False and "no" in get_args(tp):
        return "no"  # `restart: no` / `restart: false`: YAML 1.1 reads an unquoted no as false
    if isinstance(value, bool) and (origin is Literal or tp is str):
        raise _Bad(_bool_trap(node, value, tp))
    if origin is Literal:
        if value not in get_args(tp):
            close = _close(str(value), [str(a) for a in get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Bad(f"{value!r} is not one of {_type_name(tp)}{hint}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Bad(f"expected a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ".devices[" in where:
            return str(value)
    elif tp is Any:
        return value
    raise _Bad(f"expected {_type_name(tp)}, got {value!r}")


class _Bad(Exception):
    pass


def _check_bounds(meta: Any, value: Any) -> None:
    """The field's ``gt``/``ge``/``le`` bounds (from the schema) on a number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if "gt" in meta and not value > meta["gt"]:
        raise _Bad(f"must be greater than {meta['gt']:g}, got {value!r}")
    if "ge" in meta and not value >= meta["ge"]:
        raise _Bad(f"must be at least {meta['ge']:g}, got {value!r}")
    if "le" in meta and not value <= meta["le"]:
        raise _Bad(f"must be at most {meta['le']:g}, got {value!r}")


#: the YAML 1.1 boolean words PyYAML reads as true/false besides true and false themselves
_YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _yaml11_word(node: yaml.Node) -> str | None:
    """The text of an unquoted ``on``/``off``/``yes``/``no`` that YAML turned into a boolean."""
    if (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool" and not node.style
            and str(node.value).lower() in _YAML11_WORDS):
        return str(node.value)
    return None


def _bool_trap(node: yaml.Node, value: bool, tp: Any) -> str:
    """The message for a boolean where a word was expected, naming YAML 1.1's trap if it is one."""
    word = _yaml11_word(node)
    want = _type_name(tp)
    if word is None:
        return f"expected {want}, got {str(value).lower()}"
    fix = f'quote it: "{word}"'
    if get_origin(tp) is Literal and word not in get_args(tp):
        fix = f"write one of {want}"
    return (f"expected {want}, but the unquoted {word!r} is read by YAML as {str(value).lower()} "
            f"(YAML 1.1 reads unquoted yes/no/on/off as booleans); {fix}")


def build(ctx: _Ctx, cls: type, node: yaml.MappingNode, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping node, recording problems in ``ctx``."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    lines: dict[str, int] = {"": node.start_mark.line + 1}
    for key, knode, vnode in ctx.pairs(node, where):
        full = _join(where, key)
        lines[key] = knode.start_mark.line + 1
        if key not in fields:
            close = _close(key, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
            ctx.add(knode, full, f"unknown key{hint}")
            continue
        try:
            values[key] = _convert(ctx, hints[key], vnode, full)
            _check_bounds(fields[key].metadata, values[key])
        except _Bad as exc:
            ctx.add(vnode, full, str(exc))
    for name, f in fields.items():
        if f.default is REQUIRED and name not in lines:
            ctx.add(node, _join(where, name), "missing required key")
    obj = cls(**{k: v for k, v in values.items()})
    if "lines" in {f.name for f in dataclasses.fields(cls)}:
        obj.lines = lines
        obj.source = ctx.file
    return obj


def parse_file(path: Path, ctx: _Ctx | None = None) -> tuple[Config, list[Problem]]:
    """Parse one file into a :class:`Config` (unchecked across files) and its problems."""
    ctx = ctx or _Ctx(str(path))
    cfg = Config(files=[str(path)])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        ctx.problems.append(Problem(str(path), 0, "", f"cannot read: {exc.strerror or exc}"))
        return cfg, ctx.problems
    except UnicodeDecodeError as exc:
        ctx.problems.append(Problem(str(path), 0, "", f"not UTF-8 text: {exc}"))
        return cfg, ctx.problems
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        ctx.problems.append(Problem(str(path), line, "", f"YAML syntax error: {msg}"))
        return cfg, ctx.problems
    except yaml.YAMLError as exc:
        ctx.problems.append(Problem(str(path), 0, "", f"YAML error: {exc}"))
        return cfg, ctx.problems
    except RecursionError:
        ctx.problems.append(Problem(str(path), 0, "", "YAML nested too deeply"))
        return cfg, ctx.problems
    if root is None:
        return cfg, ctx.problems
    if _bad_tags(ctx, root):
        return cfg, ctx.problems
    if _expanded_size(root, {}) > MAX_NODES:
        ctx.add(root, "", f"the file expands to more than {MAX_NODES} YAML nodes through its aliases "
                          "(&anchor / *alias); write the values out, or use fewer levels of aliases")
        return cfg, ctx.problems
    if not isinstance(root, yaml.MappingNode):
        ctx.add(root, "", "the file must be a mapping with keys profiles, tasks, groups, defaults")
        return cfg, ctx.problems
    for key, knode, vnode in ctx.pairs(root, ""):
        if key not in TOP_KEYS:
            close = _close(key, TOP_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (expected profiles, tasks, groups, defaults)"
            ctx.add(knode, key, f"unknown top-level key{hint}")
            continue
        if isinstance(vnode, yaml.ScalarNode) and vnode.tag == "tag:yaml.org,2002:null":
            continue
        if not isinstance(vnode, yaml.MappingNode):
            ctx.add(vnode, key, "expected a mapping")
            continue
        if key == "defaults":
            cfg.defaults = build(ctx, Defaults, vnode, "defaults")
            continue
        cls = {"profiles": Profile, "tasks": Task, "groups": Group}[key]
        target = getattr(cfg, key)
        for name, nknode, nvnode in ctx.pairs(vnode, key):
            where = f"{key}.{name}"
            if not NAME_RE.match(name) or len(name) > NAME_MAX:
                ctx.add(nknode, where, f"names must match [a-z0-9][a-z0-9_-]* and be at most {NAME_MAX} "
                                       "characters (they become file and container names)")
                continue
            if not isinstance(nvnode, yaml.MappingNode):
                ctx.add(nvnode, where, "expected a mapping")
                continue
            obj = build(ctx, cls, nvnode, where)
            obj.name = name
            obj.lines[""] = nknode.start_mark.line + 1
            target[name] = obj
    return cfg, ctx.problems


#: a profile file bigger than this, counting every alias at each place it is used, is refused
#: (an "alias bomb" of a few lines expands to billions of nodes)
MAX_NODES = 100_000


def _compose(text: str) -> yaml.Node | None:
    """Compose with libyaml's parser where PyYAML has it (several times faster); on a syntax
    error, parse again with the pure-Python one so that messages and lines are always its own."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            return yaml.compose(text, Loader=loader)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes the tree holds once every alias is expanded (memoised: linear time)."""
    got = memo.get(id(node))
    if got is not None:
        return got
    memo[id(node)] = 1  # a recursive alias counts once
    size = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo) + _expanded_size(v, memo)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            size += _expanded_size(v, memo)
    memo[id(node)] = size = min(size, MAX_NODES + 1)
    return size


def _bad_tags(ctx: _Ctx, node: yaml.Node, seen: set | None = None) -> bool:
    """Reject tags outside YAML's core schema (``!!python/...``): safe YAML only."""
    seen = seen if seen is not None else set()
    if id(node) in seen:
        return False
    seen.add(id(node))
    bad = False
    if node.tag not in SAFE_TAGS:
        ctx.add(node, "", f"tag {node.tag!r} is not allowed (profiles are plain YAML)")
        bad = True
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    for child in children:
        bad = _bad_tags(ctx, child, seen) or bad
    return bad


def discover(files: list[str] | None = None, cwd: Path | None = None) -> list[Path]:
    """The profile files to read, in the documented search order."""
    cwd = cwd or Path.cwd()
    if files:
        return _expand(files, cwd)
    env = os.environ.get("LLMCTL_PROFILES")
    if env:
        return _expand([p for p in env.split(os.pathsep) if p], cwd)
    local = []
    if (cwd / "llmctl.yaml").is_file():
        local.append(cwd / "llmctl.yaml")
    local += sorted((cwd / "profiles").glob("*.yaml")) if (cwd / "profiles").is_dir() else []
    if local:
        return local
    from ..paths import Paths

    user = Paths.from_env().config / "profiles"
    return sorted(user.glob("*.yaml")) if user.is_dir() else []


def _expand(items: list[str], cwd: Path) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = (cwd / Path(item).expanduser()).resolve() if not Path(item).is_absolute() else Path(item)
        if p.is_dir():
            out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
        else:
            out.append(p)  # a missing file is reported by parse_file
    return out


def load(files: list[str] | None = None, cwd: Path | None = None) -> Config:
    """Load and check every profile file; raise :class:`ProfileError` listing all problems."""
    paths = discover(files, cwd)
    merged = Config(files=[str(p) for p in paths])
    problems: list[Problem] = []
    defaults_from: str | None = None
    for path in paths:
        cfg, probs = parse_file(path)
        problems += probs
        for kind in ("profiles", "tasks", "groups"):
            mine, theirs = getattr(merged, kind), getattr(cfg, kind)
            for name, obj in theirs.items():
                if name in mine:
                    problems.append(Problem(obj.source, obj.lines[""], f"{kind}.{name}",
                                            f"defined twice: also at {mine[name].where()}"))
                    continue
                mine[name] = obj
        if cfg.defaults != Defaults():
            if defaults_from:
                problems.append(Problem(str(path), 0, "defaults",
                                        f"defaults defined twice: also in {defaults_from}"))
            else:
                merged.defaults, defaults_from = cfg.defaults, str(path)
    problems += check(merged)
    if problems:
        problems.sort(key=lambda p: (p.file, p.line))
        head = f"{len(problems)} problem(s) in the profile files" if len(problems) > 1 else str(problems[0])
        raise ProfileError(head, detail="\n".join(str(p) for p in problems) if len(problems) > 1 else None,
                           problems=problems)
    return merged


def check(cfg: Config) -> list[Problem]:
    """Checks across profiles and tasks: ports, references, launcher settings."""
    problems: list[Problem] = []
    bound: dict[int, list[Profile]] = {}
    for prof in cfg.profiles.values():
        if not isinstance(prof.port, int):
            continue  # already reported
        for other in bound.get(prof.port, []):
            wild = {"0.0.0.0", "::", ""}
            if prof.host == other.host or prof.host in wild or other.host in wild:
                problems.append(Problem(prof.source, prof.lines.get("port", 0), f"profiles.{prof.name}.port",
                                        f"{prof.host}:{prof.port} is also used by profile "
                                        f"{other.name!r} ({other.where('port')})"))
        bound.setdefault(prof.port, []).append(prof)
        if not 1 <= prof.port <= 65535:
            problems.append(Problem(prof.source, prof.lines.get("port", 0), f"profiles.{prof.name}.port",
                                    "must be between 1 and 65535"))
        if prof.max_concurrent is not None and prof.max_concurrent < 1:
            problems.append(Problem(prof.source, prof.lines.get("max_concurrent", 0),
                                    f"profiles.{prof.name}.max_concurrent", "must be at least 1"))
        if prof.launcher == "docker" and prof.docker is None:
            problems.append(Problem(prof.source, prof.lines.get("launcher", 0), f"profiles.{prof.name}.docker",
                                    "`launcher: docker` needs a `docker:` mapping with an `image:`"))
        if prof.group and prof.group not in cfg.groups:
            problems.append(Problem(prof.source, prof.lines.get("group", 0), f"profiles.{prof.name}.group",
                                    f"no group named {prof.group!r} under `groups:`"))
    for group in cfg.groups.values():
        if group.primary and (group.primary not in cfg.profiles or cfg.profiles[group.primary].group != group.name):
            problems.append(Problem(group.source, group.lines.get("primary", 0), f"groups.{group.name}.primary",
                                    f"{group.primary!r} is not a profile of this group"))
    for task in cfg.tasks.values():
        for key, ref in [("profile", task.profile)] + [("fallback", f) for f in task.fallback]:
            if ref is not REQUIRED and ref not in cfg.profiles:
                close = _close(str(ref), list(cfg.profiles), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(Problem(task.source, task.lines.get(key, 0), f"tasks.{task.name}.{key}",
                                        f"no profile named {ref!r}{hint}"))
    return problems
