"""`run`, `embed` and `tasks list` (one-shot inference and task routing). Thin: parse, call
:mod:`llmctl.inference`, print. Nothing heavy is imported until a command runs."""

from __future__ import annotations

import sys
from typing import Annotated, Any, List, Optional

import typer

from ..errors import UsageError
from ..output import Output
from .common import STATE, JsonOpt, handle_errors, load_config
from .completers import complete_profiles, complete_tasks

TaskOpt = Annotated[Optional[str], typer.Option(
    "--task", "-t", autocompletion=complete_tasks, show_default=False,
    help="Task to run (routes to its profile, with its fallbacks and parameters).")]
ProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", autocompletion=complete_profiles, show_default=False,
    help="Profile to use (with --task: only this one, with the task's parameters).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds the whole request may take (0: no limit).")]
_S = "Sampling (overrides the task and defaults.sampling)"


def _sampling(*decls: str, help: str) -> Any:
    """A sampling option: under its own heading in --help, no default shown."""
    return typer.Option(*decls, help=help, rich_help_panel=_S, show_default=False)


def run(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt; `-` or omitted: read stdin. With piped "
                                                    "stdin too, the piped text is appended as context.",
                                                    show_default=False)] = None,
    task: TaskOpt = None,
    profile: ProfileOpt = None,
    mode: Annotated[str, typer.Option("--mode", "-m", help="auto: the task's server, else a running fallback, "
                                      "else cli; server: running servers only; cli: one-shot "
                                      "llama-completion.")] = "auto",
    temperature: Annotated[Optional[float], _sampling(help="Sampling temperature.")] = None,
    top_p: Annotated[Optional[float], _sampling(help="Nucleus sampling threshold.")] = None,
    top_k: Annotated[Optional[int], _sampling(help="Keep the K most likely tokens.")] = None,
    min_p: Annotated[Optional[float], _sampling(help="Minimum probability relative to the top token.")] = None,
    repeat_penalty: Annotated[Optional[float], _sampling(help="Repeat penalty.")] = None,
    presence_penalty: Annotated[Optional[float], _sampling(help="Presence penalty.")] = None,
    frequency_penalty: Annotated[Optional[float], _sampling(help="Frequency penalty.")] = None,
    seed: Annotated[Optional[int], _sampling(help="Random seed.")] = None,
    max_tokens: Annotated[Optional[int], _sampling("--max-tokens", "-n", help="Most tokens to generate.")] = None,
    stop: Annotated[Optional[List[str]], _sampling("--stop", help="Stop sequence (repeatable).")] = None,
    system: Annotated[Optional[str], _sampling(help="System prompt (\"\" removes the task's).")] = None,
    set_: Annotated[Optional[List[str]], _sampling("--set", help="Any parameter as key=value (JSON values; null "
                                                   "unsets), e.g. --set mirostat=2 --set 'stop=[\"\\n\"]'.")] = None,
    image: Annotated[Optional[List[str]], typer.Option("--image", help="Image file to send (repeatable); needs a "
                                                       "profile with `mmproj:`.", show_default=False)] = None,
    cli_tool: Annotated[Optional[str], typer.Option("--cli-tool", help="cli mode's tool: llama-completion "
                                                    "(default), llama-cli or llama-mtmd-cli.",
                                                    show_default=False)] = None,
    json: JsonOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be sent, in both modes (server "
                                          "request and cli argv, as JSON), and exit.")] = False,
    timeout: TimeoutOpt = 300.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes on stderr.")] = False,
) -> None:
    """One-shot answer from the task's server (streamed to stdout), a fallback, or llama-completion.

    Only the answer goes to stdout; notes go to stderr. `echo "$TEXT" | llmctl run --task summary`.
    """
    params = dict(locals())  # every parameter by name, as the fast path (llmctl/cli/fast.py) reads them
    from .run_exec import RunOptions, execute_run

    execute_run(RunOptions.from_params(params, STATE.files))


def embed(
    texts: Annotated[Optional[List[str]], typer.Argument(help="Texts to embed (one vector each); `-` or "
                                                         "omitted: read stdin.", show_default=False)] = None,
    profile: Annotated[Optional[str], typer.Option(
        "--profile", autocompletion=complete_profiles, show_default=False,
        help="Profile whose server makes the vectors (default: the first running one with "
             "`embeddings: true`).")] = None,
    lines: Annotated[bool, typer.Option("--lines", help="Stdin holds one text per line (else: one text).")] = False,
    json: Annotated[bool, typer.Option("--json", help="One JSON object with the profile, model, dimensions "
                                       "and all vectors (default: one JSON array per text, one per line).")] = False,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """Embedding vectors from a running server whose profile has `embeddings: true` (via /v1/embeddings)."""
    import json as _json

    items = list(texts or [])
    if not items or items == ["-"]:
        if sys.stdin.isatty():
            raise UsageError("give TEXT arguments, or pipe text on stdin")
        data = sys.stdin.read()
        items = [ln for ln in data.splitlines() if ln.strip()] if lines else ([data] if data.strip() else [])
    from ..inference.embeddings import embed as embed_texts

    result = embed_texts(items, profile=profile, config=load_config(), timeout=timeout or None)
    out = Output(json)
    if json:
        out.data(result.to_dict())
        return
    for vec in result.vectors:
        out.text(_json.dumps(vec))


tasks_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                        help="Tasks: named jobs routed to a profile, with fallbacks and parameters.")


@tasks_app.command("list")
@handle_errors
def tasks_list(json: JsonOpt = False) -> None:
    """Each task: its profile, fallbacks, parameters, and where `run --task` would go now."""
    from ..inference.tasks import task_rows

    rows = task_rows(load_config())
    out = Output(json)
    if json:
        out.data(rows)
        return
    if not rows:
        out.warn("no tasks defined (add a `tasks:` section to a profile file)")
        return
    table = []
    for r in rows:
        route = r["route"]
        now = f"{route['profile']} ({route['mode']})" if route else "-"
        params = " ".join(f"{k}={v}" for k, v in r["sampling"].items())
        table.append([r["name"], r["profile"], ", ".join(r["fallback"]), now, params, r["description"]])
    out.table(["task", "profile", "fallback", "now", "parameters", "description"], table)


COMMANDS = {"run": handle_errors(run), "embed": handle_errors(embed), "tasks": tasks_app}
