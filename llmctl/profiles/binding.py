"""Bind a YAML node tree to the schema's dataclasses, collecting every problem with its line.

PyYAML builds a node tree with positions (``yaml.compose`` with the safe loader); this module
walks that tree against the dataclasses of :mod:`llmctl.profiles.schema`, rejecting duplicate
keys (PyYAML would keep the last silently), unknown keys (with a close-match suggestion) and
wrong types. Each kind of type (union, dataclass, list, mapping, scalar) has its own small
converter, chosen by the type's origin; a converter returns the value or raises :class:`Bad`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from .schema import REQUIRED

NULL_TAG = "tag:yaml.org,2002:null"


@dataclasses.dataclass
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.file}:{self.line}:{key} {self.message}"


class Ctx:
    """One file's walk: its name, the problems found so far, a constructor for scalar values."""

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
                self.add(knode, join(where, k), f"duplicate key (first at line {seen[k].start_mark.line + 1})")
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


class Bad(Exception):
    """A value that does not fit its type; the message says what was expected."""


def close(word: str, options: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    import difflib  # only when something is misspelled

    return difflib.get_close_matches(word, list(options), n=n, cutoff=cutoff)


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {type_name(get_args(tp)[0])}"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    names: dict[Any, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, str(tp))


Converter = Callable[[Ctx, Any, yaml.Node, str], Any]


def convert(ctx: Ctx, tp: Any, node: yaml.Node, where: str) -> Any:
    """Check ``node`` against type ``tp``; return the value or raise :class:`Bad`."""
    converter = _BY_ORIGIN.get(get_origin(tp))
    if converter is None:
        converter = _dataclass if dataclasses.is_dataclass(tp) else _scalar
    return converter(ctx, tp, node, where)


def _union(ctx: Ctx, tp: Any, node: yaml.Node, where: str) -> Any:
    """``X | None`` (and unions of several types): null, or the first member that fits."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if is_null(node):
        return None
    last = None
    for a in args:
        try:
            return convert(ctx, a, node, where)
        except Bad as exc:
            last = exc
    if len(args) == 1 and last is not None:
        raise last
    raise Bad(f"expected {type_name(tp)}")


def _dataclass(ctx: Ctx, tp: Any, node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.MappingNode):
        raise Bad("expected a mapping")
    return build(ctx, tp, node, where)


def _list(ctx: Ctx, tp: Any, node: yaml.Node, where: str) -> list[Any]:
    (item,) = get_args(tp)
    if isinstance(node, yaml.ScalarNode) and item is str and where.endswith("stop"):
        return [convert(ctx, str, node, where)]  # `stop: "\n"` is a list of one
    if not isinstance(node, yaml.SequenceNode):
        raise Bad(f"expected {type_name(tp)}")
    return [convert(ctx, item, n, f"{where}[{i}]") for i, n in enumerate(node.value)]


def _dict(ctx: Ctx, tp: Any, node: yaml.Node, where: str) -> dict[str, Any]:
    """A free mapping (``env:``, ``args:``): any keys, values of the mapping's value type."""
    if not isinstance(node, yaml.MappingNode):
        raise Bad("expected a mapping")
    _, vt = get_args(tp)
    out: dict[str, Any] = {}
    for k, _, vnode in ctx.pairs(node, where):
        if vt is str:
            text = _text_value(ctx, vnode, join(where, k))
            if text is not None:
                out[k] = text
            continue
        if isinstance(vnode, yaml.MappingNode):
            ctx.pairs(vnode, join(where, k))  # duplicate check only
        # `args: {flash-attn: on}` means `--flash-attn on`; only true/false mean bare/absent
        word = yaml11_word(vnode)
        out[k] = word if word is not None else ctx.construct(vnode)
    return out


def _text_value(ctx: Ctx, vnode: yaml.Node, where: str) -> str | None:
    """A value of a mapping of strings (``env:``), as text; None after recording a problem."""
    v = ctx.construct(vnode)
    if isinstance(v, (dict, list)) or v is None:
        ctx.add(vnode, where, "expected a string, number or boolean")
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):  # `FOO: on` is the text "on", as written (not "true")
        return yaml11_word(vnode) or str(v).lower()
    return str(v)


def _scalar(ctx: Ctx, tp: Any, node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise Bad(f"expected {type_name(tp)}")
    value = ctx.construct(node)
    if get_origin(tp) is Literal:
        return _literal(tp, node, value)
    if isinstance(value, bool) and tp is str:
        raise Bad(bool_trap(node, value, tp))
    check = _SCALARS.get(tp)
    if check is None:
        raise Bad(f"expected {type_name(tp)}, got {value!r}")
    return check(tp, value, where)


def _literal(tp: Any, node: yaml.Node, value: Any) -> Any:
    """One of the words a ``Literal`` allows, naming the close one and YAML 1.1's boolean trap."""
    if value is False and "no" in get_args(tp):
        return "no"  # `restart: no` / `restart: false`: YAML 1.1 reads an unquoted no as false
    if isinstance(value, bool):
        raise Bad(bool_trap(node, value, tp))
    if value not in get_args(tp):
        near = close(str(value), [str(a) for a in get_args(tp)], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise Bad(f"{value!r} is not one of {type_name(tp)}{hint}")
    return value


def _mismatch(tp: Any, value: Any) -> Bad:
    return Bad(f"expected {type_name(tp)}, got {value!r}")


def _as_bool(tp: Any, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _mismatch(tp, value)


def _as_int(tp: Any, value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _mismatch(tp, value)


def _as_float(tp: Any, value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _mismatch(tp, value)
    if not math.isfinite(value):
        raise Bad(f"expected a finite number, got {value!r}")
    return float(value)


def _as_str(tp: Any, value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and ".devices[" in where:
        return str(value)  # `devices: [0, 1]`: device numbers are names
    raise _mismatch(tp, value)


def _as_any(tp: Any, value: Any, where: str) -> Any:
    return value


_BY_ORIGIN: dict[Any, Converter] = {typing.Union: _union, types.UnionType: _union, list: _list, dict: _dict}
_SCALARS: dict[Any, Callable[[Any, Any, str], Any]] = {
    bool: _as_bool, int: _as_int, float: _as_float, str: _as_str, Any: _as_any,
}


def check_bounds(meta: Any, value: Any) -> None:
    """The field's ``gt``/``ge``/``le`` bounds (from the schema) on a number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if "gt" in meta and not value > meta["gt"]:
        raise Bad(f"must be greater than {meta['gt']:g}, got {value!r}")
    if "ge" in meta and not value >= meta["ge"]:
        raise Bad(f"must be at least {meta['ge']:g}, got {value!r}")
    if "le" in meta and not value <= meta["le"]:
        raise Bad(f"must be at most {meta['le']:g}, got {value!r}")


#: the YAML 1.1 boolean words PyYAML reads as true/false besides true and false themselves
YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}


def yaml11_word(node: yaml.Node) -> str | None:
    """The text of an unquoted ``on``/``off``/``yes``/``no`` that YAML turned into a boolean."""
    if (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool" and not node.style
            and str(node.value).lower() in YAML11_WORDS):
        return str(node.value)
    return None


def bool_trap(node: yaml.Node, value: bool, tp: Any) -> str:
    """The message for a boolean where a word was expected, naming YAML 1.1's trap if it is one."""
    word = yaml11_word(node)
    want = type_name(tp)
    if word is None:
        return f"expected {want}, got {str(value).lower()}"
    fix = f'quote it: "{word}"'
    if get_origin(tp) is Literal and word not in get_args(tp):
        fix = f"write one of {want}"
    return (f"expected {want}, but the unquoted {word!r} is read by YAML as {str(value).lower()} "
            f"(YAML 1.1 reads unquoted yes/no/on/off as booleans); {fix}")


def build(ctx: Ctx, cls: Any, node: yaml.MappingNode, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping node, recording problems in ``ctx``."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    lines: dict[str, int] = {"": node.start_mark.line + 1}
    for key, knode, vnode in ctx.pairs(node, where):
        full = join(where, key)
        lines[key] = knode.start_mark.line + 1
        if key not in fields:
            near = close(key, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(fields)})"
            ctx.add(knode, full, f"unknown key{hint}")
            continue
        try:
            values[key] = convert(ctx, hints[key], vnode, full)
            check_bounds(fields[key].metadata, values[key])
        except Bad as exc:
            ctx.add(vnode, full, str(exc))
    optional = cls.optional_keys(values) if hasattr(cls, "optional_keys") else frozenset()
    for name, f in fields.items():
        if f.default is REQUIRED and name not in lines and name not in optional:
            ctx.add(node, join(where, name), "missing required key")
    obj = cls(**values)
    if "lines" in {f.name for f in dataclasses.fields(cls)}:
        obj.lines = lines
        obj.source = ctx.file
    return obj
