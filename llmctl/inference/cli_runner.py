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

Where each part lives: the tool and its argv in :mod:`.cli_argv`, the private files and
directory in :mod:`.cli_files`, the process, its output and the stop signals in
:mod:`.cli_process`, reading what the tool prints in :mod:`.cli_output`; this module runs them
together.

The model is loaded with the flags llama-server gets (:func:`llmctl.engines.llama_server.load_flags`),
and sampling uses :func:`llmctl.inference.params.tool_flags`, so both modes get the same values.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import EngineError, ToolIllegalInstruction, exit_words
from .cli_argv import (
    CliCommand as CliCommand,
    accepted_flags as accepted_flags,
    cli_command as cli_command,
    pick_tool as pick_tool,
)
from .cli_files import SYSTEM_FILE_TOOLS as SYSTEM_FILE_TOOLS, private_argv, private_dir
from .cli_output import END_MARKERS as END_MARKERS, Relay as _Relay, parse_perf as parse_perf
from .cli_process import STOP_SIGNALS as STOP_SIGNALS, StopGuard, end_group, relay_output, spawn
from .client import ChatResult
from .params import Params


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
    # llama-cli echoes the prompt after "> "; the answer starts on the next line
    skip = f"> {cmd.prompt}\n" if cmd.tool == "llama-cli" else None
    relay = _Relay(on_text, list(params.sampling.get("stop") or []), END_MARKERS.get(cmd.tool, []), skip)
    env = dict(os.environ)
    env.update(cmd.env)
    t0 = time.monotonic()
    with StopGuard() as guard, private_dir() as workdir, tempfile.TemporaryFile() as errlog:
        proc = spawn(private_argv(cmd, Path(workdir)), env, workdir, errlog, name, cmd.tool)
        try:
            guard.arm()
            code = relay_output(proc, relay.feed, deadline, name, cmd.tool)
        finally:
            guard.disarm()
            end_group(proc)  # timeout, Ctrl-C, a stop signal, a closed stdout: the tool goes too
        errlog.seek(0)
        log = errlog.read().decode(errors="replace")
    if code != 0:
        raise _tool_failed(name, cmd.tool, code, log)
    return _result(relay.finish(), parse_perf(log), params, t0)


def _result(text: str, perf: dict[str, Any], params: Params, t0: float) -> ChatResult:
    """The answer with its token counts and timings; `length` when it used all of max_tokens."""
    res = ChatResult(text=text)
    res.tokens_in = perf.get("prompt_n")
    res.tokens_out = perf.get("predicted_n")
    res.timings = perf
    res.finish_reason = "stop"
    limit = params.sampling.get("max_tokens")
    if limit is not None and res.tokens_out is not None and res.tokens_out >= limit:
        res.finish_reason = "length"
    res.timings["process_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return res
