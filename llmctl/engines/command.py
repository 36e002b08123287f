"""What an engine asks to run: a structured server command, which a launcher turns into a process.

The engine (llama-server, vLLM) decides the program, the flags and their order; the files the
server opens and the address it binds are typed parts of the command, not strings in an argv, so
a launcher that runs the server elsewhere (a container) places them (a mount, another address)
while the command line is rendered, once. Nothing edits an argv after it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class File:
    """A file on this machine that the server opens. A launcher that runs the server where this
    path does not exist makes the file visible there and passes that path instead."""

    role: str  #: model | mmproj | key (a launcher may place each role differently)
    path: str  #: on this machine (a vLLM model may be a Hub id, which no launcher moves)


@dataclass(frozen=True)
class Listen:
    """The address the server binds (the value of its ``--host``). A launcher may bind another
    inside: a container listens on every interface and its port mapping decides the exposure."""

    host: str


Arg = str | File | Listen


@dataclass
class ServerCommand:
    """One server's command, as its engine builds it from a profile."""

    engine: str  #: the engine's name in profiles (llama-server, vllm)
    program: list[str]  #: what starts the engine here (a binary, `vllm serve`); an image brings its own
    args: list[Arg]  #: the engine's flags in its order: plain words, files and the bind address
    host: str  #: the address clients use (the profile's `host:`)
    port: int
    env: dict[str, str] = field(default_factory=dict)  #: added to the server's environment
    env_from: dict[str, str] = field(default_factory=dict)  #: VAR -> variable of the keeper's env to copy
    unset_env: list[str] = field(default_factory=list)  #: removed from the server's environment
    key_files: dict[str, str] = field(default_factory=dict)  #: path -> variable the keeper writes there (0600)
    health_path: str = "/health"

    def files(self) -> list[File]:
        """The files the server opens, in the order the command names them."""
        return [a for a in self.args if isinstance(a, File)]

    def argv(self, *, program: bool = True, place: Callable[[File], str] | None = None,
             bind: str | None = None) -> list[str]:
        """The command line: each file at ``place(file)`` (its own path by default), the bind
        address ``bind`` (the profile's by default); without the program where ``program`` is
        false (a container image's entrypoint is the engine)."""
        out = list(self.program) if program else []
        for a in self.args:
            if isinstance(a, File):
                out.append(place(a) if place else a.path)
            elif isinstance(a, Listen):
                out.append(bind or a.host)
            else:
                out.append(a)
        return out
