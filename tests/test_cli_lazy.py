"""The root group converts a command only when it is used (llmctl/cli/lazy.py): --help lists
every command without converting one, a command line converts just its own, and a mistyped
name is answered with the close ones, once."""

from __future__ import annotations

import click
import typer

from llmctl.cli import lazy
from llmctl.cli.app import app

from .util import cli


def _root() -> lazy.LazyGroup:
    group = typer.main.get_command(app)
    assert isinstance(group, lazy.LazyGroup)
    return group


def test_help_lists_every_command_without_converting_any():
    group = _root()
    ctx = click.Context(group, info_name="llmctl")
    text = group.get_help(ctx)
    for name in lazy.WHERE:
        assert f"\n  {name} " in text
    assert group.commands == {}


def test_a_command_line_converts_only_its_command():
    group = _root()
    ctx = click.Context(group, info_name="llmctl")
    cmd = group.get_command(ctx, "down")
    assert [p.name for p in cmd.params][:2] == ["names", "all_"]
    assert list(group.commands) == ["down"]
    assert group.get_command(ctx, "nosuch") is None


def test_every_listed_help_matches_the_converted_command():
    """The stand-ins --help lists say what the converted commands say."""
    for name in lazy.WHERE:
        assert lazy.build(name).help == lazy.help_text(name), name


def test_mistyped_names_get_one_suggestion_line():
    r = cli("stat")
    assert r.returncode == 2 and "No such command 'stat'. Did you mean 'status'" in r.stderr
    r = cli("profiles", "lst")
    assert r.returncode == 2 and r.stderr.count("Did you mean 'list'?") == 1
