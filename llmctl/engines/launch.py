"""From a profile to a launch spec: its engine builds the server command, its launcher renders it.

`up` (through the supervisor's ``prepare``) and `run --dry-run` both call :func:`spec_for`, so
the argv a dry run shows is the one `up` starts.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import Paths
from ..profiles.schema import Profile
from .command import ServerCommand
from .registry import engine_for, launcher_for
from .spec import LaunchSpec


def spec_for(profile: Profile, paths: Paths) -> LaunchSpec:
    """Resolve the model and the engine, build the argv + env (nothing starts, nothing is written)."""
    from ..models.resolve import resolve_model

    model = resolve_model(profile, paths)
    launcher = launcher_for(profile.launcher)
    cmd = engine_for(profile.engine).command(profile, Path(model), paths, local=launcher.local_engine)
    return spec_with(profile, cmd, profile.launcher)


def spec_with(profile: Profile, cmd: ServerCommand, launcher_name: str) -> LaunchSpec:
    """The launch spec that runs ``cmd`` with the named launcher, and the profile's policy."""
    rendered = launcher_for(launcher_name).render(profile, cmd)
    model_file = next((f.path for f in cmd.files() if f.role == "model"), "")
    return LaunchSpec(
        name=profile.name, engine=cmd.engine, argv=rendered.argv, env=dict(cmd.env),
        host=profile.host, port=profile.port, url=profile.url, health_path=cmd.health_path,
        model=profile.model, model_path=model_file,
        restart=profile.restart, start_timeout=profile.effective_start_timeout,
        stop_timeout=profile.stop_timeout, health_interval=profile.health_interval,
        health_failures=profile.health_failures, restart_unhealthy=profile.restart_unhealthy,
        restart_delay=profile.restart_delay, restart_delay_max=profile.restart_delay_max,
        crash_limit=profile.crash_limit, crash_window=profile.crash_window,
        unset_env=list(cmd.unset_env), env_from=dict(cmd.env_from), key_files=dict(cmd.key_files),
        launcher=launcher_name, container=rendered.container, container_cli=rendered.container_cli)
