"""The one output object: data (tables, JSON, answers) to stdout; progress, hints, warnings
and errors to stderr. Rich is imported only when a terminal will show its output."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, TextIO


class Output:
    def __init__(self, json_mode: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        no_color = bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"
        self.out_tty = _isatty(self.out) and not no_color
        self.err_tty = _isatty(self.err) and not no_color

    # -- stdout -----------------------------------------------------------------------------
    def data(self, obj: Any) -> None:
        """One JSON document on stdout."""
        self.out.write(json.dumps(obj, indent=2, default=str) + "\n")
        self.out.flush()

    def text(self, s: str, end: str = "\n") -> None:
        self.out.write(s + end)
        self.out.flush()

    def table(self, columns: list[str], rows: Iterable[list[Any]]) -> None:
        rows = [["" if c is None else str(c) for c in r] for r in rows]
        if self.out_tty:
            from rich.console import Console
            from rich.table import Table

            t = Table(box=None, header_style="bold", pad_edge=False)
            for c in columns:
                t.add_column(c)
            for r in rows:
                t.add_row(*r)
            Console(file=self.out).print(t)
            return
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        self.out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip() + "\n")
        for r in rows:
            self.out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
        self.out.flush()

    # -- stderr -----------------------------------------------------------------------------
    def _err(self, prefix: str, msg: str, color: str) -> None:
        if self.err_tty:
            self.err.write(f"\x1b[{color}m{prefix}\x1b[0m{msg}\n")
        else:
            self.err.write(f"{prefix}{msg}\n")
        self.err.flush()

    def info(self, msg: str) -> None:
        self._err("", msg, "0")

    def note(self, msg: str) -> None:
        """A note from the library (a fallback taken, a parameter left out): ``note: msg``."""
        self.info(f"note: {msg}")

    def ok(self, msg: str) -> None:
        self._err("✓ " if self.err_tty else "", msg, "32")

    def warn(self, msg: str) -> None:
        self._err("warning: ", msg, "33")

    def hint(self, msg: str) -> None:
        self._err("hint: ", msg, "36")

    def error(self, msg: str, hint: str = "", detail: str | None = None) -> None:
        self._err("error: ", msg, "31;1")
        if detail:
            self.err.write(detail.rstrip() + "\n")
        if hint:
            self.hint(hint)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
