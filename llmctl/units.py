"""Sizes in bytes, read from and written for people: ``22GiB`` <-> 23622320128."""

from __future__ import annotations

import re

KIB, MIB, GIB = 1024, 1024**2, 1024**3
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": KIB, "mib": MIB, "gib": GIB, "tib": 1024**4}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """``22GiB``, ``20000MiB``, ``8GB``, ``1.5 GiB``, ``123456`` (bytes) -> bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 22GiB, 20000MiB, 8GB)")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: int | None) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1: ``1.5 GiB``."""
    if n is None:
        return "unknown"
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"
