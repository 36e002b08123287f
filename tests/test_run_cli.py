"""The two parsers of `run`: the Typer command and the Typer-free fast path
(llmctl.cli.fast) must accept the same options and read them the same way."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
import typer

from llmctl.cli.app import app
from llmctl.cli.fast import parse_fast
from llmctl.cli.run_options import FLAG_OPTIONS, VALUE_OPTIONS

from .util import free_port

CLICK_TYPES = {click.INT: int, click.FLOAT: float, click.STRING: str}


def run_command() -> click.Command:
    group = typer.main.get_command(app)
    return group.get_command(click.Context(group), "run")


def test_fast_parser_knows_exactly_the_typer_options():
    typer_values, typer_flags = {}, {}
    for p in run_command().params:
        if isinstance(p, click.Argument) or p.name == "help":
            continue
        names = tuple(p.opts + p.secondary_opts)
        if p.is_flag:
            typer_flags[names] = p.name
        else:
            typer_values[names] = (CLICK_TYPES[p.type], p.multiple)
    assert typer_flags == FLAG_OPTIONS
    assert typer_values == {names: (tp, many) for names, (_, tp, many) in VALUE_OPTIONS.items()}


@pytest.mark.parametrize("argv", [
    ["run", "hello"],
    ["run", "--task", "summary", "-m", "cli", "-n", "5", "--temperature=0.5", "--stop", "a", "--stop", "b", "x y"],
    ["run", "-t", "chat", "--set", "top_k=3", "--set", "seed=1", "--json", "--timeout", "2.5", "-q", "--", "-dash"],
    ["run", "--profile", "p", "--image", "a.png", "--image", "b.png", "--system", "", "--dry-run", "-"],
    ["run", "--top-p", "0.9", "--top-k", "4", "--min-p", "0.1", "--repeat-penalty", "1.1", "--seed", "-1",
     "--presence-penalty", "0.2", "--frequency-penalty", "0.3", "--max-tokens", "9", "--cli-tool", "llama-cli"],
    ["run"],
])
def test_fast_parser_reads_like_click(argv):
    opts = parse_fast(argv)
    assert opts is not None
    params = run_command().make_context("run", list(argv[1:])).params
    fast = {"prompt": opts.prompt, "task": opts.task, "profile": opts.profile, "mode": opts.mode,
            "set_": opts.set, "image": opts.image, "cli_tool": opts.cli_tool, "json": opts.json,
            "dry_run": opts.dry_run, "timeout": opts.timeout, "quiet": opts.quiet}
    for key in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
                "frequency_penalty", "seed", "max_tokens", "stop", "system"):
        fast[key] = opts.values.get(key, [] if key == "stop" else None)
    clicked = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    clicked = {k: ([] if v is None and k in ("stop", "set_", "image") else v) for k, v in clicked.items()}
    assert fast == clicked


@pytest.mark.parametrize("argv", [
    ["run", "--help"], ["run", "-h"], ["run", "--nope", "x"], ["run", "a", "b"], ["run", "--top-k", "many"],
    ["run", "--task"], ["status"], [], ["-f", "x.yaml"], ["run", "-qn", "5", "x"],
])
def test_fast_parser_leaves_the_rest_to_typer(argv):
    assert parse_fast(argv) is None


def test_global_file_option_before_run():
    opts = parse_fast(["-f", "a.yaml", "--file=b.yaml", "run", "x"])
    assert opts is not None and opts.files == ["a.yaml", "b.yaml"] and opts.prompt == "x"


def fast(*args: str, env: dict | None = None, input: str = "") -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "llmctl.cli.fast", *args], capture_output=True,
                          text=True, input=input, env={**os.environ, **(env or {})}, timeout=120)


def test_fast_path_errors_and_fallback_to_typer(tmp_path, smollm2):
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {free_port()}}}\n")
    r = fast("-f", str(f), "run", "--profile", "light", "--mode", "server", "hi")
    assert r.returncode == 11 and "`llmctl up light`" in r.stderr and r.stdout == ""
    r = fast("run", "--help")  # handed to the Typer app
    assert r.returncode == 0 and "--max-tokens" in r.stdout
    r = fast("-f", str(f), "run", "--profile", "light", "--dry-run", "--seed", "3", "hi")
    assert r.returncode == 0 and json.loads(r.stdout)["server"]["payload"]["seed"] == 3


@pytest.mark.engine
def test_fast_path_answers_in_cli_mode(tmp_path, smollm2):
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {free_port()}, ctx_size: 1024}}\n")
    r = fast("-f", str(f), "run", "--profile", "light", "-n", "6", "--json", "Say hi.")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["mode"], d["tool"]) == ("cli", "llama-completion") and d["text"].strip()
