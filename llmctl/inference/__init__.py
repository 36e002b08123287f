"""One-shot inference: the OpenAI-compatible client, the task router with fallback, the
cli-mode runner (llama-completion / llama-cli / llama-mtmd-cli) and embeddings.

    from llmctl.inference import run_task, embed
    r = run_task("text to summarize", task="summary")   # -> RunResult (text, profile, mode, tokens...)
    v = embed(["a", "b"], profile="embedder").vectors

Modules: params (merge and spell parameters), request (build requests), http (small client),
client (SSE chat, embeddings), router (where a request goes), cli_runner (one-shot tools),
run (run_task, dry_run), embeddings (embed), tasks (task listing).
"""

from __future__ import annotations

__all__ = ["run_task", "dry_run", "RunResult", "embed", "EmbedResult", "plan", "merge", "task_rows"]

_WHERE = {"run_task": "run", "dry_run": "run", "RunResult": "run", "embed": "embeddings", "EmbedResult": "embeddings",
          "plan": "router", "merge": "params", "task_rows": "tasks"}


def __getattr__(name: str):  # lazy: importing the package costs nothing
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
