"""The native launcher (``launcher: native``): the engine runs here, as the keeper's child.

Nothing to place and nothing to clean: the keeper's process-tree stop is the whole stop, and the
exit status the keeper reaps is the server's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...profiles.schema import Profile
from ..command import ServerCommand
from ..registry import Exit, P, Rendered, Spawner
from ..spec import LaunchSpec

if TYPE_CHECKING:
    from ..registry import Launcher


class Native:
    name = "native"
    local_engine = True

    def render(self, profile: Profile, cmd: ServerCommand) -> Rendered:
        return Rendered(cmd.argv())

    def spawn(self, spec: LaunchSpec, spawner: Spawner[P], env: dict[str, str], log_fd: int) -> P:
        return spawner.spawn(spec.argv, env, log_fd)

    def stop(self, spec: LaunchSpec) -> None:
        return None

    def after_exit(self, spec: LaunchSpec, code: int | None, sig: int | None) -> Exit:
        return Exit(code, sig)

    def inspect(self, spec: LaunchSpec) -> dict[str, Any] | None:
        return None

    def logs_argv(self, spec: LaunchSpec, lines: int, follow: bool) -> list[str] | None:
        return None

    def cleanup(self, spec: LaunchSpec) -> bool:
        return False


LAUNCHER: Launcher = Native()
