"""What a keeper needs to run one server: a plain, JSON-serialisable launch spec.

It lives here, in the layer below the supervisor, because the engines build it
(:func:`llmctl.engines.launch.spec_for`) and the supervisor runs it (it writes it as a private
file for the keeper and turns it into a restart policy); the supervisor imports the engines,
never the reverse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LaunchSpec:
    name: str
    engine: str
    argv: list[str]
    env: dict[str, str]  #: added to the keeper's environment for the server
    host: str
    port: int
    url: str  #: base URL clients use
    health_path: str = "/health"
    model: str = ""  #: what the user wrote, for display
    model_path: str = ""
    restart: str = "on-failure"
    start_timeout: float = 300.0
    stop_timeout: float = 10.0
    health_interval: float = 5.0
    health_failures: int = 3
    restart_unhealthy: bool = False
    restart_delay: float = 1.0
    restart_delay_max: float = 60.0
    crash_limit: int = 5
    crash_window: float = 300.0
    unset_env: list[str] = field(default_factory=list)  #: removed from the server's environment
    env_from: dict[str, str] = field(default_factory=dict)  #: VAR -> variable of the keeper's env to copy
    key_files: dict[str, str] = field(default_factory=dict)  #: path -> variable the keeper writes there (0600)
    launcher: str = "native"  #: the launcher's name (llmctl.engines.registry.launcher_for)
    container: str = ""  #: launchers that run a container: its name
    container_cli: str = ""  #: ... and the program that manages it (empty: the launcher's default)
    log_max_bytes: int = 20 * 1024 * 1024
    log_backups: int = 3

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, path: Path) -> LaunchSpec:
        data: dict[str, Any] = json.loads(path.read_text())
        if "docker_command" in data:  # written by an llmctl before the launchers were modules
            data.setdefault("container_cli", data["docker_command"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
