"""Read profile files: strict YAML, every error with file:line and key, checks across files.

:mod:`.discovery` decides which files to read; :mod:`.binding` turns each file's node tree into
the schema's dataclasses. This module reads and parses each file (refusing what is not plain,
bounded YAML), merges the files (a name defined twice is an error naming both places) and checks
what spans profiles and tasks. All problems of all files are reported together; nothing starts.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ProfileError
from .binding import Ctx, Problem, build, close, is_null
from .discovery import discover
from .schema import (
    NAME_MAX,
    NAME_RE,
    REMOTE_KEYS,
    REMOTE_ONLY,
    REQUIRED,
    Config,
    Defaults,
    Group,
    Profile,
    Task,
    url_port,
)

__all__ = ["MAX_NODES", "Problem", "check", "discover", "load", "parse_file"]

TOP_KEYS = ("profiles", "tasks", "groups", "defaults")
SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "seq", "map",
                                                "merge", "timestamp")}
#: the classes of the named entries under each top-level key
NAMED: dict[str, type[Profile] | type[Task] | type[Group]] = {"profiles": Profile, "tasks": Task, "groups": Group}

#: a profile file bigger than this, counting every alias at each place it is used, is refused
#: (an "alias bomb" of a few lines expands to billions of nodes)
MAX_NODES = 100_000


def parse_file(path: Path, ctx: Ctx | None = None) -> tuple[Config, list[Problem]]:
    """Parse one file into a :class:`Config` (unchecked across files) and its problems."""
    ctx = ctx or Ctx(str(path))
    cfg = Config(files=[str(path)])
    root = _read_root(path, ctx)
    if root is not None:
        _bind_top(ctx, cfg, root)
    return cfg, ctx.problems


def _read_root(path: Path, ctx: Ctx) -> yaml.MappingNode | None:
    """The file's top mapping; None when there is nothing to bind (an empty file, or a problem,
    recorded in ``ctx``)."""
    text = _read_text(path, ctx)
    root = _parse(text, str(path), ctx) if text is not None else None
    if root is None or _bad_tags(ctx, root):
        return None
    if _expanded_size(root, {}) > MAX_NODES:
        ctx.add(root, "", f"the file expands to more than {MAX_NODES} YAML nodes through its aliases "
                          "(&anchor / *alias); write the values out, or use fewer levels of aliases")
        return None
    if not isinstance(root, yaml.MappingNode):
        ctx.add(root, "", "the file must be a mapping with keys profiles, tasks, groups, defaults")
        return None
    return root


def _read_text(path: Path, ctx: Ctx) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        ctx.problems.append(Problem(str(path), 0, "", f"cannot read: {exc.strerror or exc}"))
    except UnicodeDecodeError as exc:
        ctx.problems.append(Problem(str(path), 0, "", f"not UTF-8 text: {exc}"))
    return None


def _parse(text: str, file: str, ctx: Ctx) -> yaml.Node | None:
    """The file's node tree; None for an empty file or a syntax error (recorded in ``ctx``)."""
    try:
        return _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        ctx.problems.append(Problem(file, line, "", f"YAML syntax error: {msg}"))
    except yaml.YAMLError as exc:
        ctx.problems.append(Problem(file, 0, "", f"YAML error: {exc}"))
    except RecursionError:
        ctx.problems.append(Problem(file, 0, "", "YAML nested too deeply"))
    return None


def _bind_top(ctx: Ctx, cfg: Config, root: yaml.MappingNode) -> None:
    """The top-level keys: ``defaults`` and the named entries of the others."""
    for key, knode, vnode in ctx.pairs(root, ""):
        if key not in TOP_KEYS:
            near = close(key, TOP_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else " (expected profiles, tasks, groups, defaults)"
            ctx.add(knode, key, f"unknown top-level key{hint}")
        elif is_null(vnode):
            continue
        elif not isinstance(vnode, yaml.MappingNode):
            ctx.add(vnode, key, "expected a mapping")
        elif key == "defaults":
            cfg.defaults = build(ctx, Defaults, vnode, "defaults")
        else:
            _bind_named(ctx, key, vnode, getattr(cfg, key))


def _bind_named(ctx: Ctx, key: str, node: yaml.MappingNode, target: dict[str, Profile | Task | Group]) -> None:
    """The entries under ``profiles``, ``tasks`` or ``groups``, by name."""
    for name, nknode, nvnode in ctx.pairs(node, key):
        where = f"{key}.{name}"
        if not NAME_RE.match(name) or len(name) > NAME_MAX:
            ctx.add(nknode, where, f"names must match [a-z0-9][a-z0-9_-]* and be at most {NAME_MAX} "
                                   "characters (they become file and container names)")
            continue
        if not isinstance(nvnode, yaml.MappingNode):
            ctx.add(nvnode, where, "expected a mapping")
            continue
        obj = build(ctx, NAMED[key], nvnode, where)
        obj.name = name
        obj.lines[""] = nknode.start_mark.line + 1
        target[name] = obj


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


def _bad_tags(ctx: Ctx, node: yaml.Node, seen: set[int] | None = None) -> bool:
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
        problems += remote_problems(prof)
        if not isinstance(prof.port, int) or prof.remote:
            continue  # already reported; a remote server binds nothing here
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
        lacking = prof.launcher_problem()
        if lacking:
            problems.append(Problem(prof.source, prof.lines.get("launcher", 0), f"profiles.{prof.name}.docker",
                                    lacking))
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
                near = close(str(ref), list(cfg.profiles), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                problems.append(Problem(task.source, task.lines.get(key, 0), f"tasks.{task.name}.{key}",
                                        f"no profile named {ref!r}{hint}"))
    return problems


def remote_problems(prof: Profile) -> list[Problem]:
    """A remote profile: a valid ``url:``, a ``health:`` path, none of the keys that run a server;
    a local one: none of the remote-only keys."""
    def problem(key: str, message: str) -> Problem:
        return Problem(prof.source, prof.lines.get(key, prof.lines.get("", 0)), f"profiles.{prof.name}.{key}", message)

    written = [k for k in prof.lines if k]
    if not prof.remote:
        return [problem(k, f"only for `engine: remote` (this profile's server is {prof.engine}, "
                           "reached at its host and port)") for k in written if k in REMOTE_ONLY]
    out = [problem(k, "not for `engine: remote`: llmctl does not start that server (a remote profile "
                      f"takes {', '.join(sorted(REMOTE_KEYS))})") for k in written if k not in REMOTE_KEYS]
    if "url" not in written:
        out.append(problem("url", "missing required key: `engine: remote` needs the server's base URL, "
                                  "e.g. url: https://gpu-box:8080"))
    else:
        why = url_problem(prof.url)
        if why:
            out.append(problem("url", why))
    if prof.health is not None and not prof.health.startswith("/"):
        out.append(problem("health", f"a path on the server, starting with /, e.g. /health (got {prof.health!r})"))
    return out


def url_problem(url: str) -> str | None:
    """What is wrong with a remote server's base URL, None when nothing is."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    if scheme not in ("http", "https") or not netloc:
        return f"expected an http:// or https:// base URL, e.g. https://gpu-box:8080 (got {url!r})"
    if "@" in netloc:
        return "no credentials in the URL: put the key in an environment variable named by api_key_env"
    if any(c in url for c in "?# \t\n"):
        return f"a base URL has no query, fragment or spaces (got {url!r})"
    if not 1 <= url_port(url) <= 65535:
        return f"bad port in {url!r} (1-65535)"
    if path.rstrip("/").endswith("v1"):
        return f"give the server's base URL without /v1 (llmctl adds /v1/...): {url[: -len(path) - 1]!r}"
    return None
