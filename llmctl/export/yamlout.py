"""A small YAML writer that keeps comments: the exports say where each value came from.

Input is plain data (dicts, lists, str, int, float, bool, None); any value may be wrapped in
:class:`Note` to carry a comment. Output is block-style YAML, keys in the order given (the
exporters build them in a fixed order, so the same input gives the same bytes). A string is
written plain only when every YAML parser reads it back as that string (no YAML 1.1 booleans,
nothing number-like); otherwise double-quoted with JSON escapes, which YAML reads the same way.
Multi-line strings become ``|`` blocks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: YAML 1.1 words read as booleans or null by some parsers (Go's yaml.v2, PyYAML)
_SPECIAL = {"y", "yes", "n", "no", "on", "off", "true", "false", "null", "~", ".inf", ".nan"}
_PLAIN_RE = re.compile(r"^[A-Za-z/_.$-][A-Za-z0-9_./@=+:$-]*\Z")


@dataclass(frozen=True)
class Note:
    """A value with the comment written beside it (or above it, for a mapping or a list)."""

    value: Any
    comment: str


def unwrap(value: Any) -> tuple[Any, str]:
    """(the value, its comment or "")."""
    if isinstance(value, Note):
        inner, more = unwrap(value.value)
        return inner, "; ".join(c for c in (value.comment, more) if c)
    return value, ""


def plain(data: Any) -> Any:
    """The data without its notes (what a YAML parser reads back)."""
    data, _ = unwrap(data)
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data


def _plain_ok(text: str) -> bool:
    if not _PLAIN_RE.match(text) or text.lower() in _SPECIAL or text.endswith(":") or ": " in text:
        return False
    if text.startswith("-") and (len(text) == 1 or text[1] in " 0123456789."):
        return False  # "-", "- x", "-1", "-.5": a sequence entry or a number
    return not (text.startswith(".") and text[1:2].isdigit())


def scalar(value: Any) -> str:
    """One scalar as YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if _plain_ok(text) else json.dumps(text)


def _comment(text: str) -> str:
    return f"  # {' '.join(text.split())}" if text else ""


def _block(text: str, indent: str) -> list[str] | None:
    """A multi-line string as a ``|`` block, or None when quoting is safer (leading spaces on
    the first line, tabs, trailing spaces, several trailing newlines)."""
    if "\n" not in text or text.startswith((" ", "\n")) or "\t" in text or "\r" in text:
        return None
    body = text[:-1] if text.endswith("\n") else text
    if body.endswith("\n") or any(line != line.rstrip() for line in body.split("\n")):
        return None
    head = "|" if text.endswith("\n") else "|-"
    return [head] + [f"{indent}{line}" if line else "" for line in body.split("\n")]


def _lines(data: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(data, dict):
        out: list[str] = []
        for key, raw in data.items():
            value, note = unwrap(raw)
            out += _entry(f"{pad}{scalar(str(key))}:", value, note, indent + 2)
        return out
    out = []
    for raw in data:
        value, note = unwrap(raw)
        if isinstance(value, dict) and value:
            if note:
                out.append(f"{pad}# {' '.join(note.split())}")
            inner = _lines(value, indent + 2)
            out += [f"{pad}- {inner[0][indent + 2:]}"] + inner[1:]
        else:
            out += _entry(f"{pad}-", value, note, indent + 2)
    return out


def _entry(head: str, value: Any, note: str, indent: int) -> list[str]:
    """``head`` (``key:`` or ``-``) followed by the value, inline or as a nested block."""
    if isinstance(value, (dict, list)) and value:
        if isinstance(value, list) and head.endswith(":"):
            indent -= 2  # a list under a key sits at the key's own indentation
        return [f"{head}{_comment(note)}"] + _lines(value, indent)
    if isinstance(value, (dict, list)):
        return [f"{head} {'{}' if isinstance(value, dict) else '[]'}{_comment(note)}"]
    if isinstance(value, str):
        block = _block(value, " " * indent)
        if block is not None:
            return [f"{head} {block[0]}{_comment(note)}"] + block[1:]
    return [f"{head} {scalar(value)}{_comment(note)}"]


def dump(data: dict[str, Any], header: list[str] | None = None) -> str:
    """One YAML document: ``header`` as comment lines, then ``data``."""
    lines = [f"# {h}".rstrip() for h in header or []]
    lines += _lines(data, 0)
    return "\n".join(lines) + "\n"


def dump_all(docs: list[str]) -> str:
    """Documents (from :func:`dump`) as one multi-document stream."""
    return "---\n".join(docs)
