"""`bench PROFILE...`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import Output
from .common import JsonOpt, NamesArg, handle_errors, load_config


def bench(names: NamesArg,
          runs: Annotated[int, typer.Option(help="Requests per profile and mode.")] = 3,
          prompt_words: Annotated[int, typer.Option(help="Length of the prompt, in words.")] = 200,
          max_tokens: Annotated[int, typer.Option(help="Tokens to generate per request.")] = 64,
          mode: Annotated[str, typer.Option(help="server, cli, or both (server,cli).")] = "server,cli",
          json: JsonOpt = False) -> None:
    """Prompt and generation tokens/s, time to first token; server mode against cli mode."""
    from ..bench import bench as run_bench

    out = Output(json)
    modes = tuple(m.strip() for m in mode.split(",") if m.strip())
    rows = run_bench(load_config(), names, modes=modes, runs=runs, prompt_words=prompt_words,
                     max_tokens=max_tokens, note=lambda s: None if json else out.info(s))
    if json:
        out.data([r.to_dict() for r in rows])
        return
    out.table(["profile", "mode", "runs", "prompt tok", "prompt tok/s", "gen tok", "gen tok/s", "ttft ms",
               "total ms", "note"],
              [[r.profile, r.mode, r.runs, r.prompt_tokens, r.prompt_tps, r.gen_tokens, r.gen_tps, r.ttft_ms,
                r.total_ms, r.error or ""] for r in rows])


COMMANDS = {"bench": handle_errors(bench)}
