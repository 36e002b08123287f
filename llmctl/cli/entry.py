"""The `llmctl` entry point, the CLI's one front door. The commands scripts call in loops
(`status`, `run`) take the fast path (:mod:`.fast`), which reads their usual command lines
without importing Typer/Click; anything it is not sure about (--help, odd options), and a shell
asking for completions, goes to the Typer app (:mod:`.app`)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if "_LLMCTL_COMPLETE" not in os.environ:
        from .fast import fast_main

        code = fast_main(sys.argv[1:])
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    from .app import main as full

    full()
