"""The fast path of the front door (:mod:`.entry`): `status` and `run`, which scripts call in
loops, read without importing Typer or Click (they cost more at start-up than a short answer
from a local server). A command line it is not sure about (``--help``, an unknown or malformed
option, bundled short flags) gives None, and the Typer app reads it instead.

run's options come from :mod:`.run_options`, generated from the Typer command's own signature
(:mod:`.run_table`); its errors go through the same funnel as every command (:mod:`.report`).

    python -m llmctl.cli.fast [-f FILE]... run|status ...    # this path alone (benchmarks)
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import run_options as table
from .report import guarded

if TYPE_CHECKING:
    from .run_exec import RunOptions

_VALUES = {name: spec for names, spec in table.VALUE_OPTIONS.items() for name in names}
_FLAGS = {name: dest for names, dest in table.FLAG_OPTIONS.items() for name in names}


def split_files(argv: list[str]) -> tuple[list[str], list[str]]:
    """The root options before the command (``-f FILE``, ``--file FILE``, ``--file=FILE``,
    repeatable): the files and the rest of the command line."""
    files: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i].startswith("--file="):
            files.append(argv[i][len("--file="):])
            i += 1
        elif argv[i] in ("-f", "--file") and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 2
        else:
            break
    return files, argv[i:]


def parse_status(args: list[str]) -> tuple[list[str], bool] | None:
    """``status [--json] [NAME...]`` (without the word ``status``) -> (names, json)."""
    names, json = [], False
    for a in args:
        if a == "--json":
            json = True
        elif a.startswith("-"):
            return None
        else:
            names.append(a)
    return names, json


def _option(args: list[str], j: int, params: dict[str, Any]) -> int:
    """Read the option at ``args[j]`` into ``params``; the index after it, or -1 if Click must read it."""
    name, eq, inline = args[j].partition("=")
    j += 1
    if name in _FLAGS and not eq:
        params[_FLAGS[name]] = True
        return j
    if name not in _VALUES or (eq and not name.startswith("--")):
        return -1  # --help, unknown options, bundled short flags
    if not eq:
        if j >= len(args):
            return -1
        inline, j = args[j], j + 1
    dest, tp, many = _VALUES[name]
    try:
        value = tp(inline)
    except ValueError:
        return -1
    params[dest] = (params[dest] or []) + [value] if many else value
    return j


def parse_run(args: list[str]) -> dict[str, Any] | None:
    """``run [options] [PROMPT]`` (without the word ``run``) -> run's parameters by name, as
    Click would read them; None when anything is unusual."""
    params: dict[str, Any] = dict(table.DEFAULTS)
    positional: list[str] = []
    j = 0
    while j < len(args):
        a = args[j]
        if a == "--":
            positional += args[j + 1:]
            break
        if a.startswith("-") and a != "-":
            j = _option(args, j, params)
            if j < 0:
                return None
            continue
        positional.append(a)
        j += 1
    if len(positional) > 1:
        return None
    params[table.ARGUMENT] = positional[0] if positional else None
    return params


def parse_fast(argv: list[str]) -> RunOptions | None:
    """``[-f FILE]... run [options] [PROMPT]`` -> :class:`~.run_exec.RunOptions`, or None."""
    from .run_exec import RunOptions

    files, rest = split_files(argv)
    params = parse_run(rest[1:]) if rest[:1] == ["run"] else None
    return None if params is None else RunOptions.from_params(params, files or None)


def fast_main(argv: list[str]) -> int | None:
    """Run a `status` or `run` command line without Typer: its exit code, or None when the
    Typer app must read it."""
    files, rest = split_files(argv)
    if rest[:1] == ["status"]:
        parsed = parse_status(rest[1:])
        if parsed is None:
            return None
        from .status_view import show_status

        return guarded(show_status, parsed[0] or None, parsed[1], files or None)
    if rest[:1] == ["run"]:
        opts = parse_fast(argv)
        if opts is None:
            return None
        from .run_exec import execute_run

        return guarded(execute_run, opts)
    return None


if __name__ == "__main__":
    code = fast_main(sys.argv[1:])
    if code is None:
        from .app import main

        main()
    else:
        sys.stdout.flush()
        sys.exit(code)
