"""What a one-shot tool prints: the answer on stdout, relayed as it comes minus what is not the
answer (:class:`Relay`), and the timings of its `perf_print` lines on stderr (:func:`parse_perf`)."""

from __future__ import annotations

import re
from typing import Any, Callable

#: what each tool prints after the answer
END_MARKERS = {
    "llama-completion": [" [end of text]"],
    "llama-cli": ["\n\n\nExiting...", "\n[ Prompt:", "\nExiting..."],
    "llama-mtmd-cli": [],
}


class Relay:
    """Passes the tool's stdout on as it arrives, minus what is not the answer: llama-cli's
    banner and prompt echo (``skip_until``), a stop string and whatever follows it (the server
    leaves stop strings out too), end markers (`` [end of text]``) and trailing newlines the
    tool adds. Text that might be the start of a stop string or marker is held back."""

    def __init__(self, emit: Callable[[str], None] | None, stops: list[str], markers: list[str],
                 skip_until: str | None = None) -> None:
        self.emit = emit
        self.cuts = [s for s in stops + markers if s]
        self.skip_until = skip_until
        self.pending = ""
        self.out: list[str] = []
        self.done = False

    def _send(self, s: str) -> None:
        if s:
            self.out.append(s)
            if self.emit:
                self.emit(s)

    def feed(self, s: str) -> None:
        if self.done or not s:
            return
        self.pending += s
        if self.skip_until is not None:
            i = self.pending.find(self.skip_until)
            if i < 0:
                return
            self.pending = self.pending[i + len(self.skip_until):]
            self.skip_until = None
        hits = [i for i in (self.pending.find(c) for c in self.cuts) if i >= 0]
        if hits:
            self._send(self.pending[: min(hits)].rstrip("\n"))
            self.pending, self.done = "", True
            return
        cut = len(self.pending) - self._held()
        self._send(self.pending[:cut])
        self.pending = self.pending[cut:]

    def _held(self) -> int:
        """How many characters at the end of ``pending`` wait for more text: trailing newlines,
        or the longest start of a stop string or marker."""
        keep = len(self.pending) - len(self.pending.rstrip("\n"))
        for c in self.cuts:
            for k in range(min(len(c) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(c[:k]):
                    keep = max(keep, k)
                    break
        return keep

    def finish(self) -> str:
        if not self.done and self.skip_until is None:
            self._send(self.pending.rstrip("\n"))
        self.pending, self.done = "", True
        return "".join(self.out)


_PERF = {
    "prompt": re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens"),
    "eval": re.compile(r"(?<!prompt )\beval time =\s*([\d.]+) ms /\s*(\d+) runs"),
    "load": re.compile(r"load time =\s*([\d.]+) ms"),
}


def parse_perf(log: str) -> dict[str, Any]:
    """Token counts and timings from the tool's `perf_print` lines on stderr."""
    out: dict[str, Any] = {}
    m = _PERF["prompt"].search(log)
    if m:
        ms, n = float(m.group(1)), int(m.group(2))
        out.update(prompt_n=n, prompt_ms=ms, prompt_per_second=round(n / ms * 1000, 2) if ms else None)
    m = _PERF["eval"].search(log)
    if m:
        ms, runs = float(m.group(1)), int(m.group(2))
        # the first generated token comes out of the prompt's evaluation: runs + 1 tokens
        out.update(predicted_n=runs + 1, predicted_ms=ms,
                   predicted_per_second=round(runs / ms * 1000, 2) if ms else None)
    m = _PERF["load"].search(log)
    if m:
        out["load_ms"] = float(m.group(1))
    return out
