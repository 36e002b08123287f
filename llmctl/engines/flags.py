"""Turn a profile's `args:` mapping into engine flags, in the engine's own spelling, and refuse
the flags that give a server dangerous capabilities (:class:`UnsafeFlags`)."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ProfileError

#: one row of an engine's flag table: (canonical long name, every spelling, env variable or None)
FlagRow = tuple[str, tuple[str, ...], "str | None"]

_SPELLINGS_RE = re.compile(r"^(-{1,2}[A-Za-z0-9][\w.-]*(?:,\s*-{1,2}[A-Za-z0-9][\w.-]*)*)")
_ENV_RE = re.compile(r"\(env: ([A-Za-z_][A-Za-z0-9_]*)\)")


def flag_name(key: str) -> str:
    return key if key.startswith("-") else f"--{key}"


def bare(token: str) -> str:
    """A flag spelling with its dashes stripped and ``_`` read as ``-``, the way llama.cpp reads
    ``--long_names``; a key in `args:` is compared in this form, so ``ag``, ``-ag`` and
    ``--ag`` all mean llama-server's ``-ag``."""
    return token.strip().lstrip("-").replace("_", "-")


def parse_help(text: str) -> list[FlagRow]:
    """The options of a llama.cpp tool's ``--help``: a line starting with a dash opens one
    (``-ag,   --agent, -no-ag, --no-agent  whether to...``) and the indented lines after it
    belong to it, one of them perhaps ``(env: LLAMA_ARG_AGENT)``. The canonical name is the
    first long spelling that is not a ``--no-`` form."""
    rows: list[list[Any]] = []
    current: list[Any] | None = None
    for line in text.splitlines():
        m = _SPELLINGS_RE.match(line)
        if m:
            spellings = tuple(s.strip() for s in m.group(1).split(","))
            longs = [s for s in spellings if s.startswith("--") and not is_negation(s)]
            current = [longs[0] if longs else spellings[0], spellings, None]
            rows.append(current)
            line = line[m.end():]
        elif line.strip() and not line.startswith((" ", "\t")):
            current = None  # a section title ends the option before it
            continue
        env = _ENV_RE.search(line)
        if env and current is not None and current[2] is None:
            current[2] = env.group(1)
    return [(c, s, e) for c, s, e in rows]


def is_negation(spelling: str) -> bool:
    """``--no-agent``, ``-no-ag``: the spelling that turns an option off."""
    return bare(spelling).startswith("no-")


@dataclass(frozen=True)
class Capability:
    """Something a server can be told to do beyond serving a model, and the flags that do it."""

    name: str
    what: str  #: what it lets others do, as a sentence fragment
    flags: tuple[str, ...]  #: canonical names in the engine's flag table


class UnsafeFlags:
    """Every spelling and env variable of the flags in ``capabilities``, from the engine's flag
    table. A spelling matches in the :func:`bare` form; ``--no-`` forms (which turn the
    capability off) do not match."""

    def __init__(self, table: Iterable[FlagRow], capabilities: Iterable[Capability]) -> None:
        rows = {canonical: (spellings, env) for canonical, spellings, env in table}
        self.capabilities = tuple(capabilities)
        self._spellings: dict[str, tuple[Capability, str]] = {}
        self._env: dict[str, tuple[Capability, str]] = {}
        for cap in self.capabilities:
            for canonical in cap.flags:
                if canonical not in rows:
                    raise KeyError(f"capability {cap.name!r} names {canonical}, which the flag table lacks")
                spellings, env = rows[canonical]
                for s in spellings:
                    if not is_negation(s):
                        self._spellings[bare(s)] = (cap, canonical)
                if env:
                    self._env[env] = (cap, canonical)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and bare(token) in self._spellings

    def flag(self, token: str) -> tuple[Capability, str] | None:
        """(capability, canonical flag) of a dangerous spelling, else None."""
        return self._spellings.get(bare(token))

    def env(self, name: str) -> tuple[Capability, str] | None:
        """(capability, canonical flag) that an env variable sets, else None."""
        return self._env.get(name)

    def env_names(self) -> set[str]:
        return set(self._env)


FIX = "remove it, or set `allow_unsafe_args: true` in this profile if you mean it"


def refusal(where: str, key: str, cap: Capability, canonical: str, via: str = "") -> str:
    """The message for a refused flag: where, which key, the flag, the capability and the fix.
    ``via`` says how ``key`` reaches the flag when it is not the flag itself."""
    subject = f"{via} {canonical}, which" if via else canonical
    return f"{where}: {key}: {subject} {cap.what} (capability `{cap.name}`); {FIX}"


def _check_unsafe(key: str, flag: str, values: list[str], unsafe: Container[str], where: str) -> None:
    """Refuse ``key`` if its flag, or a value llama-server would read as a flag (after a flag
    that takes none: ``{jinja: --agent}``), is a dangerous spelling."""
    for i, token in enumerate([flag] + [v for v in values if v.lstrip().startswith("-")]):
        via = f"value {token!r} is read as" if i else ""
        if isinstance(unsafe, UnsafeFlags):
            hit = unsafe.flag(token)
            if hit:
                raise ProfileError(refusal(where, f"args.{key}", *hit, via=via))
        elif bare(token) in unsafe:
            raise ProfileError(f"{where}: args.{key}: {via or 'flag'} {token} is refused as unsafe; {FIX}")


def passthrough(args: dict[str, Any], *, reserved: dict[str, str], unsafe: Container[str],
                allow_unsafe: bool, where: str) -> list[str]:
    """``{flash-attn: "on", verbose: true, lora: [a, b]}`` -> ``--flash-attn on --verbose --lora a --lora b``.

    ``true`` gives the bare flag, ``false``/``null`` leave it out, a list repeats it.
    ``reserved`` maps flags llmctl sets itself to the profile key to use instead. ``unsafe``
    (an :class:`UnsafeFlags`, or bare names) is refused unless ``allow_unsafe``.
    """
    out: list[str] = []
    for key, value in args.items():
        flag = flag_name(key)
        long = "--" + bare(flag) if flag.startswith("--") else flag  # llama.cpp reads _ as -
        use = reserved.get(flag) or reserved.get(long) or reserved.get(bare(flag))
        if use:
            raise ProfileError(f"{where}: args.{key}: llmctl sets this flag itself; use `{use}` instead")
        tokens: list[str] = []
        values: list[str] = []
        for v in value if isinstance(value, list) else [value]:
            if v is None or v is False:
                continue
            if isinstance(v, (dict, list)):
                raise ProfileError(f"{where}: args.{key}: expected a string, number or boolean")
            if v is not True:
                values.append(str(v))
            tokens += [flag] if v is True else [flag, str(v)]
        if tokens and not allow_unsafe:
            _check_unsafe(key, flag, values, unsafe, where)
        out += tokens
    return out
