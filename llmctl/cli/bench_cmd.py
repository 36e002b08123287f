"""`bench PROFILE...`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import Output
from .common import JsonOpt, NamesArg, handle_errors, load_config


def _fmt(value: float | None, client: bool) -> str | None:
    if value is None:
        return None
    return f"{value}*" if client else str(value)


def bench(names: NamesArg,
          runs: Annotated[int, typer.Option(min=1, help="Requests per profile and mode.")] = 3,
          prompt_words: Annotated[int, typer.Option(min=1, help="Length of the prompt, in words.")] = 200,
          max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate per request.")] = 64,
          mode: Annotated[str, typer.Option(
              help="server, cli, or both: the same prompts through the running server and through a "
                   "one-shot llama-completion/llama-cli (both skips cli mode for engines without one).")] = "both",
          timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 300.0,
          json: JsonOpt = False) -> None:
    """Prompt and generation tokens/s, time to first token; server mode against cli mode.

    Speeds come from the engine's own timings (source `server`: llama-server; `tool`: the
    one-shot tool's perf lines); an engine that reports none (vLLM) gets figures measured by the
    client from the streamed answer (source `client`, marked * in the table). Exit code: that
    of the first failed row (11 when a server is not running), else 0.
    """
    from ..bench import MODES, bench as run_bench
    from ..errors import ExitCode, UsageError

    out = Output(json)
    both = mode.strip() == "both"
    modes = MODES if both else tuple(m.strip() for m in mode.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise UsageError(f"--mode must be server, cli, both or server,cli (got {mode!r})")
    rows = run_bench(load_config(), names, modes=modes, runs=runs, prompt_words=prompt_words,
                     max_tokens=max_tokens, timeout=timeout, skip_impossible=both,
                     note=lambda s: None if json else out.info(s))
    if json:
        out.data([r.to_dict() for r in rows])
    else:
        out.table(["profile", "mode", "runs", "prompt tok", "prompt tok/s", "gen tok", "gen tok/s", "ttft ms",
                   "total ms", "source", "note"],
                  [[r.profile, r.mode, r.runs, r.prompt_tokens, _fmt(r.prompt_tps, r.source in CLIENT),
                    r.gen_tokens, _fmt(r.gen_tps, r.source in CLIENT), r.ttft_ms, r.total_ms if r.runs else None,
                    r.source, r.error or ""] for r in rows])
        if any(r.source in CLIENT for r in rows):
            out.text("* measured by the client from the streamed answer where the engine reported no timings "
                     "(`mixed`: some of the row's figures)")
    failed = [r for r in rows if r.exit_code]
    if failed:
        for r in failed:
            if r.exit_code != ExitCode.NO_SERVER:  # e.g. a tool that died of SIGILL: the fix
                out.error(f"{r.mode} mode: {r.error}", r.hint or "")
            elif not json:
                out.hint(f"start it with `llmctl up {r.profile}`, or use --mode cli")
        raise typer.Exit(failed[0].exit_code or 1)


CLIENT = ("client", "mixed")  #: rows with figures the client measured: marked *

COMMANDS = {"bench": handle_errors(bench)}
