"""Engines and launchers by name: the two protocols, and where each implementation lives.

An :class:`Engine` (llama-server, vLLM) turns a profile into a :class:`~.command.ServerCommand`;
a :class:`Launcher` (native, a container) turns that command into a process and owns what
differs between ways of running one: the spawn, the stop, what is inspected for `status`, the
live logs, the cleanup of what a dead keeper left, and how an exit is read. The keeper, `status`,
`down` and `logs` ask the profile's launcher and never test its name.

A third engine is one module under ``llmctl/engines/`` named in :data:`ENGINES`; a third
launcher one module under ``llmctl/engines/launchers/``, named after the ``launcher:`` value
it serves. Each module exposes its implementation as ``ENGINE`` or ``LAUNCHER``; the profile
schema lists the names a profile may use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..paths import Paths
from ..profiles.schema import Profile
from .command import ServerCommand
from .spec import LaunchSpec

P = TypeVar("P")
P_co = TypeVar("P_co", covariant=True)

#: engine name (the profile's `engine:`) -> its module
ENGINES = {"llama-server": "llmctl.engines.llama_server", "vllm": "llmctl.engines.vllm"}
LAUNCHERS_PACKAGE = "llmctl.engines.launchers"  #: launcher name -> the module of that name in here


class Engine(Protocol):
    name: str

    def check(self, profile: Profile) -> None:
        """Refuse what this engine would refuse in the profile, starting nothing
        (`profiles validate`): flags llmctl sets itself, unsafe flags."""

    def command(self, profile: Profile, model: Path, paths: Paths, *, local: bool) -> ServerCommand:
        """The server command for ``profile`` with its resolved ``model``. ``local``: the engine
        runs from this machine's install, to be found here; otherwise an image brings it."""
        ...


@dataclass
class Rendered:
    """What a launcher makes of a server command: the argv the keeper spawns, and for a launcher
    that runs a container, its name and the program that manages it."""

    argv: list[str]
    container: str = ""
    container_cli: str = ""


@dataclass
class Exit:
    """How a server ended, as its launcher reads it."""

    code: int | None
    signal: int | None
    cause: str = ""  #: why, where `status` and `up` show the reason (a container's OOM kill)
    notes: list[str] = field(default_factory=list)  #: lines for the server's log


class Spawner(Protocol[P_co]):
    """What starts a process (the keeper's OS object): an argv, its environment, the log."""

    def spawn(self, argv: list[str], env: dict[str, str], log_fd: int) -> P_co: ...


class Launcher(Protocol):
    name: str
    local_engine: bool  #: the engine runs from this machine's install (False: an image brings it)

    def render(self, profile: Profile, cmd: ServerCommand) -> Rendered:
        """The argv that runs ``cmd`` this way (built once, never edited afterwards)."""
        ...

    def spawn(self, spec: LaunchSpec, spawner: Spawner[P], env: dict[str, str], log_fd: int) -> P:
        """Start the server (clearing what a previous run left in its way first)."""
        ...

    def stop(self, spec: LaunchSpec) -> None:
        """Stop the server by the launcher's own means, before its process tree is signalled."""

    def after_exit(self, spec: LaunchSpec, code: int | None, sig: int | None) -> Exit:
        """The spawned process ended with ``code``/``sig``: how the server ended, and clean up
        what the launcher leaves after an exit."""
        ...

    def inspect(self, spec: LaunchSpec) -> dict[str, Any] | None:
        """What `status` shows about how the server runs (a container's state), or None."""

    def logs_argv(self, spec: LaunchSpec, lines: int, follow: bool) -> list[str] | None:
        """The command that prints the live server's own logs (a container's), or None: read
        the log file."""

    def cleanup(self, spec: LaunchSpec) -> bool:
        """`down` found no keeper: stop and remove what the launcher may have left running.
        True if something was still running."""
        ...


def engine_for(name: str) -> Engine:
    """The engine called ``name`` (a profile's `engine:`)."""
    try:
        module = ENGINES[name]
    except KeyError:
        raise ValueError(f"no engine {name!r} (known: {', '.join(ENGINES)})") from None
    engine: Engine = importlib.import_module(module).ENGINE
    return engine


def launcher_for(name: str) -> Launcher:
    """The launcher called ``name`` (a profile's `launcher:`, a launch spec's ``launcher``)."""
    if not name.isidentifier():
        raise ValueError(f"no launcher {name!r}")
    try:
        mod = importlib.import_module(f"{LAUNCHERS_PACKAGE}.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"no launcher {name!r}") from None
    launcher: Launcher = mod.LAUNCHER
    return launcher
