"""cli mode's private files: the prompt never goes into the tool's argv, where `ps` shows it to
every user. It is written to a 0600 file (``-f``), and so is the system prompt where the tool
reads one from a file (``-sysf``). The files live in a new 0700 directory that is also the tool's
working directory (never the user's: llama.cpp's backend loader looks there for ``libggml-*.so``)
and that is removed however the run ends."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import StateError
from .cli_argv import CliCommand

#: the tools that read the system prompt from a file (-sysf); llama-mtmd-cli has only -sys
SYSTEM_FILE_TOOLS = ("llama-completion", "llama-cli")


def private_argv(cmd: CliCommand, workdir: Path) -> list[str]:
    """The argv as run: ``-p PROMPT`` becomes ``-f FILE`` and, for tools that take ``-sysf``,
    ``-sys SYSTEM`` becomes ``-sysf FILE``; the files are 0600 in ``workdir``."""
    argv = list(cmd.argv)
    if argv[-2:] == ["-p", cmd.prompt]:
        argv[-2:] = ["-f", _secret_file(workdir / "prompt.txt", cmd.prompt)]
    if cmd.system and cmd.tool in SYSTEM_FILE_TOOLS:
        for i in range(len(argv) - 1):
            if argv[i:i + 2] == ["-sys", cmd.system]:
                argv[i:i + 2] = ["-sysf", _secret_file(workdir / "system.txt", cmd.system)]
                break
    return argv


def _secret_file(path: Path, text: str) -> str:
    """Write ``text`` for -f/-sysf, which drop one trailing newline (so one is added)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text + "\n")
    except OSError as exc:
        raise StateError(f"cannot write the prompt for the one-shot tool to {path}: {exc.strerror or exc}",
                         path=path.parent) from None
    return str(path)


def private_dir() -> tempfile.TemporaryDirectory[str]:
    """A new 0700 directory for the prompt files, also the tool's cwd; removed on exit."""
    try:
        return tempfile.TemporaryDirectory(prefix="llmctl-run-")
    except OSError as exc:
        raise StateError(f"cannot make a private directory for the one-shot tool: {exc.strerror or exc}",
                         path=tempfile.gettempdir()) from None
