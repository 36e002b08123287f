"""cli mode: one request through a llama.cpp one-shot tool. The model is loaded for this
request only and the process exits afterwards.

- ``llama-completion`` (preferred): chat template applied (``--jinja -cnv -st``, as llama-server
  does), only the answer on stdout (``--no-display-prompt``); the text is relayed as it comes.
- ``llama-cli`` (when llama-completion is absent): a chat program; ``-p PROMPT -st`` answers one
  turn. Its banner and the echo of the prompt are skipped.
- ``llama-mtmd-cli`` for images (``--mmproj`` from the profile, ``--image FILE``).

The model is loaded with the flags llama-server gets (:func:`llmctl.engines.llama_server.load_flags`),
and sampling uses :func:`llmctl.inference.params.tool_flags`, so both modes get the same values.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import EngineError, RequestTimeout, UsageError
from ..paths import Paths
from ..profiles.schema import Profile
from .client import ChatResult
from .params import Params, tool_flags

#: a prompt longer than this goes to the tool in a file (-f), not in argv
ARGV_PROMPT_MAX = 64 * 1024
END_MARKERS = {
    "llama-completion": [" [end of text]"],
    "llama-cli": ["\n\n\nExiting...", "\n[ Prompt:", "\nExiting..."],
    "llama-mtmd-cli": [],
}
_FLAG_RE = re.compile(r"^\s*(-{1,2}[A-Za-z0-9][\w-]*(?:,\s+-{1,2}[A-Za-z0-9][\w-]*)*)")


@dataclass
class CliCommand:
    """A one-shot command, ready to run (and to show in --dry-run)."""

    tool: str  #: llama-completion | llama-cli | llama-mtmd-cli
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  #: added to the caller's environment
    skipped_args: list[str] = field(default_factory=list)  #: profile `args:` this tool does not take
    prompt: str = ""

    def public(self) -> dict:
        return {"tool": self.tool, "argv": self.argv, "env": self.env, "skipped_args": self.skipped_args}


def _binary(profile: Profile, tool: str):
    from ..engines.discovery import find_llama

    binary = profile.binary
    if binary and not Path(binary).expanduser().is_absolute():
        binary = str(profile.base_dir / binary)
    return find_llama(tool, binary, profile.backend)


def pick_tool(profile: Profile, images: list[str] | None) -> tuple[str, object]:
    """The tool for this request and its binary: llama-mtmd-cli for images, else
    llama-completion, else llama-cli."""
    from ..errors import EngineNotFound

    if images:
        return "llama-mtmd-cli", _binary(profile, "llama-mtmd-cli")
    try:
        return "llama-completion", _binary(profile, "llama-completion")
    except EngineNotFound:
        return "llama-cli", _binary(profile, "llama-cli")


def cli_command(profile: Profile, params: Params, prompt: str, images: list[str] | None = None,
                paths: Paths | None = None, tool: str | None = None) -> CliCommand:
    """Build the argv: model, load flags (shared with llama-server), sampling, system prompt,
    the profile's `args:` that this tool accepts, the prompt."""
    from ..engines.devices import device_env
    from ..engines.llama_server import load_flags
    from ..models.resolve import resolve_model

    if profile.engine != "llama-server":
        raise UsageError(f"profile {profile.name!r}: cli mode needs a llama-server profile "
                         f"(engine is {profile.engine}); start it and use --mode server")
    if tool:
        engine = _binary(profile, tool)
    else:
        tool, engine = pick_tool(profile, images)
    model = resolve_model(profile, paths)
    argv = [engine.path, "-m", str(model)]
    if tool == "llama-mtmd-cli":
        if not profile.mmproj:
            raise UsageError(f"profile {profile.name!r} has no `mmproj:`, so it cannot read images "
                             f"({profile.where()})")
        mmproj = Path(profile.mmproj).expanduser()
        if not mmproj.is_absolute():
            mmproj = profile.base_dir / mmproj
        argv += ["--mmproj", str(mmproj)]
    argv += load_flags(profile)
    argv += tool_flags(params)
    if params.system:
        argv += ["-sys", params.system]
    if tool == "llama-completion":
        argv += ["--jinja", "-cnv", "-st", "--no-display-prompt", "--no-warmup"]
    elif tool == "llama-cli":
        argv += ["--jinja", "-st", "--simple-io", "--no-show-timings", "--no-warmup"]
    else:
        argv += ["--jinja"]
    extra, skipped = _profile_args(profile, engine.path)
    argv += extra
    for image in images or []:
        argv += ["--image", str(Path(image).expanduser())]
    argv += ["-p", prompt]
    env = dict(engine.env)
    env.update(device_env(profile.backend, profile.devices))
    env.update(profile.env)
    return CliCommand(tool, argv, env, skipped, prompt)


def _profile_args(profile: Profile, binary: str) -> tuple[list[str], list[str]]:
    """The profile's `args:` (server flags in the engine's spelling) that ``binary`` also takes;
    server-only ones (--metrics, --slots...) are skipped and reported."""
    if not profile.args:
        return [], []
    from ..engines.flags import flag_name, passthrough
    from ..engines.llama_server import RESERVED, UNSAFE

    known = accepted_flags(binary)
    keep, skipped = {}, []
    for key, value in profile.args.items():
        if flag_name(key) in known:
            keep[key] = value
        else:
            skipped.append(flag_name(key))
    argv = passthrough(keep, reserved=RESERVED, unsafe=UNSAFE, allow_unsafe=profile.allow_unsafe_args,
                       where=profile.where("args"))
    return argv, skipped


def accepted_flags(binary: str) -> set[str]:
    """Every flag spelling ``binary --help`` lists."""
    try:
        text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        m = _FLAG_RE.match(line)
        if m:
            flags.update(f.strip() for f in m.group(1).split(","))
    return flags


class _Relay:
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
        keep = len(self.pending) - len(self.pending.rstrip("\n"))
        for c in self.cuts:
            for k in range(min(len(c) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(c[:k]):
                    keep = max(keep, k)
                    break
        cut = len(self.pending) - keep
        self._send(self.pending[:cut])
        self.pending = self.pending[cut:]

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


def parse_perf(log: str) -> dict:
    """Token counts and timings from the tool's `perf_print` lines on stderr."""
    out: dict = {}
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


def run_cli(cmd: CliCommand, params: Params, *, name: str, deadline: float | None = None,
            on_text: Callable[[str], None] | None = None) -> ChatResult:
    """Run the one-shot tool, relaying the answer as it is printed; raise EngineError with the
    tool's last log lines if it fails, RequestTimeout (after killing it) past the deadline."""
    import codecs
    import selectors
    import tempfile

    argv = list(cmd.argv)
    prompt_file = None
    if len(cmd.prompt.encode()) > ARGV_PROMPT_MAX and argv[-2:] == ["-p", cmd.prompt]:
        fd, prompt_file = tempfile.mkstemp(prefix="llmctl-prompt-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(cmd.prompt)
        argv[-2:] = ["-f", prompt_file]
    # llama-cli echoes the prompt after "> "; the answer starts on the next line
    skip = f"> {cmd.prompt}\n" if cmd.tool == "llama-cli" else None
    relay = _Relay(on_text, list(params.sampling.get("stop") or []), END_MARKERS.get(cmd.tool, []), skip)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    errlog = tempfile.TemporaryFile()
    env = dict(os.environ)
    env.update(cmd.env)
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog, env=env)
    except OSError as exc:
        errlog.close()
        raise EngineError(f"{name}: cannot run {cmd.tool}: {exc.strerror or exc}", profile=name) from None
    sel = selectors.DefaultSelector()
    try:
        sel.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise RequestTimeout(f"{name}: {cmd.tool} did not finish within the timeout", profile=name)
            if not sel.select(wait):
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            relay.feed(decoder.decode(data))
        relay.feed(decoder.decode(b"", final=True))
        remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
        try:
            code = proc.wait(remaining)
        except subprocess.TimeoutExpired:
            raise RequestTimeout(f"{name}: {cmd.tool} did not exit within the timeout", profile=name) from None
    finally:
        sel.close()
        if proc.poll() is None:  # timeout, Ctrl-C, a closed stdout: the tool goes too
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if prompt_file:
            os.unlink(prompt_file)
    errlog.seek(0)
    log = errlog.read().decode(errors="replace")
    errlog.close()
    if code != 0:
        tail = "\n".join(log.splitlines()[-15:])
        raise EngineError(f"{name}: {cmd.tool} exited with code {code}", detail=f"last lines of its output:\n{tail}",
                          profile=name)
    res = ChatResult(text=relay.finish())
    perf = parse_perf(log)
    res.tokens_in = perf.get("prompt_n")
    res.tokens_out = perf.get("predicted_n")
    res.timings = perf
    res.finish_reason = "stop"
    if "max_tokens" in params.sampling and res.tokens_out is not None and res.tokens_out >= params.sampling["max_tokens"]:
        res.finish_reason = "length"
    res.timings["process_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return res
