"""The `llmctl` entry point: hot commands that scripts call in loops (`status`, `run`) take a
fast path that parses their usual command lines without importing Typer/Click; anything the
fast path is not sure about (--help, odd options) goes to the full Typer app."""

from __future__ import annotations

import os
import sys


def _files_prefix(argv: list[str]) -> tuple[list[str], int]:
    files, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--file="):
            files.append(a[7:])
            i += 1
        elif a in ("-f", "--file") and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 2
        else:
            break
    return files, i


def fast_status(argv: list[str]) -> int | None:
    """``[-f FILE]... status [--json] [NAME...]``; None when anything else is there."""
    files, i = _files_prefix(argv)
    if i >= len(argv) or argv[i] != "status":
        return None
    names, json = [], False
    for a in argv[i + 1:]:
        if a == "--json":
            json = True
        elif a.startswith("-"):
            return None
        else:
            names.append(a)
    from ..errors import ExitCode, LlmctlError, describe
    from ..output import Output
    from .status_view import show_status

    try:
        return show_status(names or None, json, files or None)
    except LlmctlError as err:
        code, msg, hint = describe(err)
        Output().error(msg, hint, err.detail)
        return int(code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


def main() -> None:
    argv = sys.argv[1:]
    if "_LLMCTL_COMPLETE" not in os.environ:
        code = fast_status(argv)
        _, i = _files_prefix(argv)
        if code is None and argv[i:i + 1] == ["run"]:
            from ..inference.command import fast_main

            code = fast_main(argv)
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    from .app import main as full

    full()
