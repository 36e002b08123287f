"""The root command group, built one command at a time.

Typer turns every command into a Click command up front, reading each function's signature and
evaluating its annotations: for llmctl's 22 commands that is ~55 ms on every start, for a command
line that uses one of them. So the root group knows each command only by the module that defines
it (``WHERE``; each module has a ``COMMANDS`` table) and converts it when Click asks for it by
name. ``llmctl --help`` lists every command from its help text alone.
"""

from __future__ import annotations

import difflib
import importlib
import inspect

import click
import typer
from typer.core import TyperGroup

#: command name → the module of llmctl.cli whose COMMANDS defines it, in the order --help lists
#: them (Typer's own order: commands, then groups)
WHERE = {
    "up": "lifecycle", "down": "lifecycle", "restart": "lifecycle", "status": "lifecycle",
    "logs": "lifecycle", "plan": "lifecycle",
    "pull": "models_cmd", "import": "models_cmd",
    "run": "run_cmd", "embed": "run_cmd",
    "serve": "serve_cmd", "doctor": "doctor_cmd", "bench": "bench_cmd", "completion": "completion_cmd",
    "export": "export_cmd",
    "profiles": "profiles_cmd", "models": "models_cmd", "tasks": "run_cmd",
}


def definition(name: str):
    """The function (already wrapped by handle_errors) or Typer sub-app behind ``name``."""
    return importlib.import_module(f"{__package__}.{WHERE[name]}").COMMANDS[name]


def build(name: str) -> click.Command:
    """The Click command for ``name``, converted by Typer exactly as the whole app would be."""
    obj = definition(name)
    parent = typer.Typer(rich_markup_mode=None, add_completion=False)  # a group holding only `name`
    parent.callback()(_no_options)
    if isinstance(obj, typer.Typer):
        parent.add_typer(obj, name=name)
    else:
        parent.command(name)(obj)
    group = typer.main.get_command(parent)
    assert isinstance(group, click.Group)
    cmd = group.commands[name]
    if isinstance(cmd, TyperGroup):
        cmd.suggest_commands = False  # Click already says "Did you mean"; Typer would say it again
    return cmd


def _no_options() -> None:
    pass


def help_text(name: str) -> str | None:
    """The help Typer would give the command, without converting it."""
    obj = definition(name)
    if isinstance(obj, typer.Typer):
        return obj.info.help
    return inspect.getdoc(obj)


class LazyGroup(TyperGroup):
    """llmctl's root group: see the module docstring."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(WHERE)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in WHERE:
            return None
        if cmd_name not in self.commands:
            if self._listing:  # a stand-in that only has to say what the command does
                return click.Command(cmd_name, help=help_text(cmd_name))
            self.add_command(build(cmd_name), cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:  # Typer's suggestion looks only at converted commands
            close = difflib.get_close_matches(args[0], list(WHERE)) if args else []
            if close and "Did you mean" not in exc.message:
                raise click.UsageError(f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?",
                                       ctx=exc.ctx) from None
            raise
