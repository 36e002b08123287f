"""The CLI has one front door (llmctl/cli/entry.py): a Typer-free fast path for `status` and
`run` whose option table comes from the Typer command's own signature, one `-f` parser, one
funnel from errors to exit codes, and a library below it that neither prints nor imports the
CLI. These tests guard the start-up imports of the commands scripts call in loops and the
shape that keeps them cheap."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

import llmctl

from .test_architecture import HEAVY, import_graph
from .util import free_port

PKG = Path(llmctl.__file__).parent


def imported(*args: str, cwd: Path) -> tuple[int, set[str]]:
    """Run `python -X importtime -m llmctl ARGS`; its exit code and every module it imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmctl", *args], capture_output=True, text=True,
                       cwd=cwd, stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    mods = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "llmctl.cli.entry" in mods, r.stderr[-2000:]
    return r.returncode, {m.split(".")[0] for m in mods}


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  p: {{model: {model}, port: {free_port()}}}\ntasks:\n  t: {{profile: p}}\n")
    return f


@pytest.mark.parametrize("args, code", [
    (["status", "--json"], 3),
    (["status", "p"], 3),
    (["run", "--profile", "p", "--dry-run", "hi"], 0),
    (["run", "--task", "t", "--mode", "server", "hi"], 11),  # nothing running: the error path
])
def test_status_and_run_start_without_typer_or_heavy_modules(tmp_path, profile_file, args, code):
    got, mods = imported("-f", str(profile_file), *args, cwd=tmp_path)
    assert got == code
    assert mods.isdisjoint(("typer", "click", *HEAVY)), sorted(mods & {"typer", "click", *HEAVY})


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_starts_without_heavy_modules(tmp_path, args):
    got, mods = imported(*args, cwd=tmp_path)
    assert got == 0 and "typer" in mods
    assert mods.isdisjoint(HEAVY), sorted(mods & set(HEAVY))


def test_fast_path_table_is_generated_from_the_run_signature():
    """llmctl/cli/run_options.py is exactly what `python -m llmctl.cli.run_table` writes now."""
    from llmctl.cli import run_options, run_table

    assert Path(run_options.__file__).read_text() == run_table.render(), \
        "llmctl/cli/run_options.py is out of date: run `python -m llmctl.cli.run_table`"


@pytest.mark.parametrize("option", [
    typer.Option("--color/--no-color"),  # a pair: the fast path knows only on/off flags
    typer.Option("--level", click_type=click.Choice(["a", "b"])),  # Click would check the choice
    typer.Option("--who", envvar="LLMCTL_WHO"),  # Click would read the variable
])
def test_table_refuses_options_the_fast_path_would_read_unlike_click(option):
    from llmctl.cli import run_table

    app = typer.Typer()

    @app.command()
    def run(x: str = option) -> None:
        pass

    with pytest.raises(ValueError, match="fast path"):
        run_table.derive(typer.main.get_command(app))


def test_nothing_below_the_cli_imports_the_cli_or_output():
    """The library returns data and notes; only llmctl/cli prints. (__main__.py is the door itself.)"""
    bad = [f"{e.where()} {e.target}" for e in import_graph()
           if not e.source.startswith(("llmctl.cli", "llmctl.__main__"))
           and (e.target == "llmctl.output" or e.target.startswith("llmctl.cli"))]
    assert bad == []


def test_one_file_parser_one_error_funnel_and_no_printed_notes():
    """`--file=` is read in one place; in the CLI only report.py turns errors into messages and
    exit codes (errors.describe); the library builds no "note: " text (the CLI adds it)."""
    strings: dict[str, set[str]] = {"--file=": set(), "describe": set(), "note: ": set()}
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "--file=" in node.value:
                strings["--file="].add(rel)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("note: "):
                strings["note: "].add(rel)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "describe" and rel.startswith("cli/"):
                strings["describe"].add(rel)
    assert strings == {"--file=": {"cli/fast.py"}, "describe": {"cli/report.py"}, "note: ": {"output.py"}}
