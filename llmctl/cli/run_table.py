"""Write llmctl/cli/run_options.py, the fast path's table of `run`'s options, from the `run`
command's own signature: the Click command Typer makes of :func:`llmctl.cli.run_cmd.run`, so
its spellings, types, repeatable options and defaults are read, never copied by hand.

    python -m llmctl.cli.run_table            # after changing run's options
    python -m llmctl.cli.run_table --check    # exit 1 if run_options.py is out of date

The fast path imports only the generated file (importing Typer to read the signature would cost
what the fast path saves); tests/test_cli_front_door.py fails when the two disagree. An option
the fast path could not read like Click (a choice, an --x/--no-x pair, an envvar, a callback) is
refused here, so it cannot slip past the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGET = Path(__file__).with_name("run_options.py")

HEADER = '''"""`llmctl run`'s options, for the fast path (llmctl/cli/fast.py), which imports no Typer.

Generated from the `run` command's signature (llmctl/cli/run_cmd.py) by
`python -m llmctl.cli.run_table`: do not edit. tests/test_cli_front_door.py checks it is current.
"""

from __future__ import annotations

from typing import Any
'''


def _type_of(param: Any) -> type:
    import click

    for cls, tp in ((click.types.IntParamType, int), (click.types.FloatParamType, float),
                    (click.types.StringParamType, str)):
        if type(param.type) is cls:
            return tp
    raise ValueError(f"run's {param.name}: type {param.type.name} is not one the fast path reads")


def _check_plain(param: Any) -> None:
    if param.nargs != 1 or param.envvar or param.callback or param.is_eager or getattr(param, "count", False) \
            or param.secondary_opts:
        raise ValueError(f"run's {param.name}: the fast path reads only plain options and on/off flags")


def derive(command: Any = None) -> dict[str, Any]:
    """ARGUMENT, VALUE_OPTIONS, FLAG_OPTIONS and DEFAULTS of the `run` command as Typer builds it
    (or of another Click ``command``); ValueError for an option the fast path cannot read."""
    import click

    from .lazy import build

    table: dict[str, Any] = {"ARGUMENT": None, "VALUE_OPTIONS": {}, "FLAG_OPTIONS": {}, "DEFAULTS": {}}
    for p in (command or build("run")).params:
        _check_plain(p)
        table["DEFAULTS"][p.name] = p.default
        if isinstance(p, click.Argument):
            if table["ARGUMENT"] is not None or p.multiple:
                raise ValueError("the fast path reads one positional argument")
            table["ARGUMENT"] = p.name
        elif isinstance(p, click.Option) and p.is_flag:
            table["FLAG_OPTIONS"][tuple(p.opts)] = p.name
        else:
            table["VALUE_OPTIONS"][tuple(p.opts)] = (p.name, _type_of(p), p.multiple)
    return table


def _literal(value: Any) -> str:
    """Python source for ``value``, strings in double quotes (as the rest of llmctl)."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def render(table: dict[str, Any] | None = None) -> str:
    table = table or derive()
    lines = [HEADER, "#: the positional argument", f"ARGUMENT = {_literal(table['ARGUMENT'])}",
             "#: options that take a value: spellings -> (parameter, type, repeatable)",
             "VALUE_OPTIONS: dict[tuple[str, ...], tuple[str, type, bool]] = {"]
    lines += [f"    {_literal(names)}: {_literal(spec)}," for names, spec in table["VALUE_OPTIONS"].items()]
    lines += ["}", "#: on/off options: spellings -> parameter",
              "FLAG_OPTIONS: dict[tuple[str, ...], str] = {"]
    lines += [f"    {_literal(names)}: {_literal(dest)}," for names, dest in table["FLAG_OPTIONS"].items()]
    lines += ["}", "#: each parameter's value when its option is not given",
              "DEFAULTS: dict[str, Any] = {"]
    lines += [f"    {_literal(name)}: {_literal(value)}," for name, value in table["DEFAULTS"].items()]
    return "\n".join(lines + ["}", ""])


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run `python -m llmctl.cli.run_table`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
