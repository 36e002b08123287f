"""cli mode: one request through a llama.cpp one-shot tool. The model is loaded for this
request only and the process exits afterwards.

- ``llama-completion`` (preferred): chat template applied (``--jinja -cnv -st``, as llama-server
  does), only the answer on stdout (``--no-display-prompt``); the text is relayed as it comes.
- ``llama-cli`` (when llama-completion is absent): a chat program; ``-p PROMPT -st`` answers one
  turn. Its banner and the echo of the prompt are skipped.
- ``llama-mtmd-cli`` for images (``--mmproj`` from the profile, ``--image FILE``).

The prompt never goes into the tool's argv, where `ps` shows it to every user: it is passed in a
0600 file (``-f``), and so is the system prompt where the tool reads one from a file (``-sysf``:
llama-completion, llama-cli). The files live in a private directory that is also the tool's
working directory (never the user's: llama.cpp's backend loader looks there for
``libggml-*.so``) and that is removed however the run ends. The tool runs in its own process
group, killed whole when `run` is stopped (Ctrl-C, SIGTERM, SIGHUP) or times out.

The model is loaded with the flags llama-server gets (:func:`llmctl.engines.llama_server.load_flags`),
and sampling uses :func:`llmctl.inference.params.tool_flags`, so both modes get the same values.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import (
    EngineError,
    Interrupted,
    RequestTimeout,
    StateError,
    ToolIllegalInstruction,
    UsageError,
    exit_words,
)
from ..paths import Paths
from ..profiles.schema import Profile
from .client import ChatResult
from .params import Params, tool_flags

#: the tools that read the system prompt from a file (-sysf); llama-mtmd-cli has only -sys
SYSTEM_FILE_TOOLS = ("llama-completion", "llama-cli")
#: signals that stop `run` while a tool runs: the tool's group goes first, and its files
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
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
    system: str = ""  #: the system prompt (after -sys in argv)

    def public(self) -> dict:
        """What --dry-run shows: the argv with the prompts in it (when run, they go in files:
        :func:`private_argv`)."""
        return {"tool": self.tool, "argv": self.argv, "env": self.env, "skipped_args": self.skipped_args}


def _binary(profile: Profile, tool: str):
    from ..engines.discovery import find_llama

    binary = profile.binary
    if binary and not Path(binary).expanduser().is_absolute():
        binary = str(profile.base_dir / binary)
    found = find_llama(tool, binary, profile.backend)
    if not os.path.isabs(found.path):  # e.g. from a relative PATH entry: the tool runs elsewhere
        found = replace(found, path=os.path.abspath(found.path))
    return found


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
    argv = [engine.path, "-m", os.path.abspath(model)]
    if tool == "llama-mtmd-cli":
        if not profile.mmproj:
            raise UsageError(f"profile {profile.name!r} has no `mmproj:`, so it cannot read images "
                             f"({profile.where()})")
        mmproj = Path(profile.mmproj).expanduser()
        if not mmproj.is_absolute():
            mmproj = profile.base_dir / mmproj
        argv += ["--mmproj", os.path.abspath(mmproj)]
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
        argv += ["--image", os.path.abspath(Path(image).expanduser())]
    argv += ["-p", prompt]
    env = dict(engine.env)
    env.update(device_env(profile.backend, profile.devices))
    env.update(profile.env)
    return CliCommand(tool, argv, env, skipped, prompt, params.system or "")


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
                              stdin=subprocess.DEVNULL, cwd="/").stdout  # no libggml-*.so from the user's cwd
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


def _private_dir():
    """A new 0700 directory for the prompt files, also the tool's cwd; removed on exit."""
    import tempfile

    try:
        return tempfile.TemporaryDirectory(prefix="llmctl-run-")
    except OSError as exc:
        raise StateError(f"cannot make a private directory for the one-shot tool: {exc.strerror or exc}",
                         path=tempfile.gettempdir()) from None


class _Stopped(BaseException):
    """A stop signal arrived while the tool ran (unwinds run_cli; never escapes it)."""


class _StopGuard:
    """While a one-shot tool runs, SIGINT, SIGTERM and SIGHUP unwind :func:`run_cli` (which
    kills the tool's process group and removes its files) instead of ending the process at
    once; afterwards the signal is delivered again under the previous handler, so the process
    ends as it was asked to (Ctrl-C: KeyboardInterrupt). A signal arriving before the tool is
    started (or after it ended) is held until then. A signal the caller ignores (nohup's
    SIGHUP) stays ignored; outside the main thread, where no handler can be set, nothing changes."""

    def __enter__(self) -> _StopGuard:
        self.got: int | None = None
        self.armed = False
        self.old: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame) -> None:
        if self.got is None:
            self.got = signum
            if self.armed:
                self.armed = False
                raise _Stopped()

    def arm(self) -> None:
        """From now until :meth:`disarm`, a stop signal raises at once."""
        self.armed = True
        if self.got is not None:
            self.armed = False
            raise _Stopped()

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *exc) -> bool:
        for sig, old in self.old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if self.got is None:
            return False
        if self.old.get(self.got) is signal.default_int_handler:
            raise KeyboardInterrupt
        os.kill(os.getpid(), self.got)  # the default action ends this process here
        raise Interrupted(f"stopped by signal {self.got}")


def _spawn(argv: list[str], env: dict, workdir: str, errlog, name: str, tool: str) -> subprocess.Popen:
    """Start the tool in its own process group (killed whole), in ``workdir``."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog,
                                env=env, cwd=workdir, start_new_session=True)
    except OSError as exc:
        raise EngineError(f"{name}: cannot run {tool}: {exc.strerror or exc}", profile=name) from None


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the tool's whole group while its leader is unreaped (so the group id cannot
    belong to anyone else yet), then reap it."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _relay(proc: subprocess.Popen, relay: _Relay, deadline: float | None, name: str, tool: str) -> int:
    """Feed the tool's stdout to ``relay`` until it closes; return the exit status."""
    import codecs
    import selectors

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise RequestTimeout(f"{name}: {tool} did not finish within the timeout", profile=name)
            if not sel.select(wait):
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            relay.feed(decoder.decode(data))
    relay.feed(decoder.decode(b"", final=True))
    remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
    try:
        return proc.wait(remaining)
    except subprocess.TimeoutExpired:
        raise RequestTimeout(f"{name}: {tool} did not exit within the timeout", profile=name) from None


def _tool_failed(name: str, tool: str, code: int, log: str) -> EngineError:
    tail = "\n".join(log.splitlines()[-15:])
    how = exit_words(None, -code) if code < 0 else exit_words(code, None)
    cls = ToolIllegalInstruction if code == -signal.SIGILL else EngineError
    return cls(f"{name}: {tool} {how}", detail=f"last lines of its output:\n{tail}", profile=name)


def run_cli(cmd: CliCommand, params: Params, *, name: str, deadline: float | None = None,
            on_text: Callable[[str], None] | None = None) -> ChatResult:
    """Run the one-shot tool, relaying the answer as it is printed; raise EngineError with the
    tool's last log lines if it fails (ToolIllegalInstruction for SIGILL), RequestTimeout
    (after killing it) past the deadline. See the module's docstring for what stays private."""
    import tempfile

    # llama-cli echoes the prompt after "> "; the answer starts on the next line
    skip = f"> {cmd.prompt}\n" if cmd.tool == "llama-cli" else None
    relay = _Relay(on_text, list(params.sampling.get("stop") or []), END_MARKERS.get(cmd.tool, []), skip)
    env = dict(os.environ)
    env.update(cmd.env)
    t0 = time.monotonic()
    with _StopGuard() as guard, _private_dir() as workdir, tempfile.TemporaryFile() as errlog:
        proc = _spawn(private_argv(cmd, Path(workdir)), env, workdir, errlog, name, cmd.tool)
        try:
            guard.arm()
            code = _relay(proc, relay, deadline, name, cmd.tool)
        finally:
            guard.disarm()
            _kill_group(proc)  # timeout, Ctrl-C, a stop signal, a closed stdout: the tool goes too
            proc.stdout.close()
        errlog.seek(0)
        log = errlog.read().decode(errors="replace")
    if code != 0:
        raise _tool_failed(name, cmd.tool, code, log)
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
