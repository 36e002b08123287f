"""Progress of a pull: rich bars (bytes, speed, ETA) on a terminal, plain lines when piped.

Both receive the same calls from :mod:`llmctl.models.pull`, possibly from several threads.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ..output import Output


def human(n: float) -> str:
    """Bytes in decimal units, as the Hub shows sizes."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class PullProgress:
    """Silent base: the hooks a pull calls. Subclass it to show progress anywhere."""

    def begin(self, label: str, files: int, total: int, to_fetch: int) -> None:
        """A pull of ``files`` files (``total`` bytes, ``to_fetch`` of them still missing) starts."""

    def file_start(self, path: str, size: int, have: int) -> None:
        """``path`` starts; ``have`` bytes are already there (a partial being resumed)."""

    def advance(self, path: str, n: int) -> None:
        """``n`` more bytes of ``path`` arrived."""

    def file_reset(self, path: str) -> None:
        """The server ignored the resume request; ``path`` starts again from 0."""

    def file_end(self, path: str, note: str) -> None:
        """``path`` is done; ``note`` says how it was verified."""

    def message(self, text: str) -> None:
        """A line for the user (resuming, kept, ...)."""

    def close(self) -> None:
        """Stop drawing (always called, also after errors)."""


class LineProgress(PullProgress):
    """Plain lines on a stream (stderr when it is not a terminal): one at each file's start and
    end, and one every ``every`` seconds in between."""

    def __init__(self, stream: TextIO, every: float = 2.0) -> None:
        self.stream, self.every = stream, every
        self.lock = threading.Lock()
        self.files: dict[str, list[float]] = {}  # path -> [size, done, start done, t0, last print]

    def _line(self, text: str) -> None:
        with self.lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def begin(self, label: str, files: int, total: int, to_fetch: int) -> None:
        self._line(f"pulling {label}: {files} file{'s' * (files != 1)}, {human(total)}"
                   + (f", {human(to_fetch)} to download" if to_fetch != total else ""))

    def file_start(self, path: str, size: int, have: int) -> None:
        now = time.monotonic()
        self.files[path] = [size, have, have, now, now]
        self._line(f"  {path}: {'resuming at ' + human(have) + ' of ' if have else ''}{human(size)}")

    def advance(self, path: str, n: int) -> None:
        st = self.files.get(path)
        if st is None:
            return
        st[1] += n
        now = time.monotonic()
        if now - st[4] >= self.every:
            st[4] = now
            rate = (st[1] - st[2]) / max(now - st[3], 1e-6)
            eta = (st[0] - st[1]) / rate if rate > 0 else 0
            pct = 100 * st[1] / st[0] if st[0] else 100
            self._line(f"  {path}: {pct:.0f}% {human(st[1])}/{human(st[0])}, {human(rate)}/s, ETA {eta:.0f}s")

    def file_reset(self, path: str) -> None:
        st = self.files.get(path)
        if st is not None:
            st[1] = st[2] = 0
        self._line(f"  {path}: the server ignored the resume request; starting over")

    def file_end(self, path: str, note: str) -> None:
        st = self.files.pop(path, None)
        if st is None:
            self._line(f"  {path}: {note}")
            return
        secs = max(time.monotonic() - st[3], 1e-6)
        got = st[1] - st[2]
        self._line(f"  {path}: done, {human(got)} in {secs:.1f}s ({human(got / secs)}/s), {note}")

    def message(self, text: str) -> None:
        self._line(text)


class RichProgress(PullProgress):
    """Rich bars on a terminal: one per file with bytes, speed and time left."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(file=stream)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                            transient=False)
        self.tasks: dict[str, TaskID] = {}
        self.bar.start()

    def begin(self, label: str, files: int, total: int, to_fetch: int) -> None:
        self.console.print(f"pulling [bold]{label}[/]: {files} file{'s' * (files != 1)}, {human(total)}"
                           + (f", {human(to_fetch)} to download" if to_fetch != total else ""))

    def file_start(self, path: str, size: int, have: int) -> None:
        self.tasks[path] = self.bar.add_task(path, total=size, completed=have)

    def advance(self, path: str, n: int) -> None:
        if path in self.tasks:
            self.bar.advance(self.tasks[path], n)

    def file_reset(self, path: str) -> None:
        if path in self.tasks:
            self.bar.reset(self.tasks[path])

    def file_end(self, path: str, note: str) -> None:
        if path in self.tasks:
            self.bar.update(self.tasks[path], description=f"{path} [green]✓[/] {note}")

    def message(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        self.bar.stop()


def progress_for(out: Output) -> PullProgress:
    """Rich bars if ``out`` (an :class:`llmctl.output.Output`) has a terminal on stderr, else lines."""
    return RichProgress(out.err) if out.err_tty else LineProgress(out.err)
