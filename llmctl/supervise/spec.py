"""What a keeper needs to run one server: a plain, JSON-serialisable launch spec."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
    key_files: dict[str, str] = field(default_factory=dict)  #: path -> variable whose value the keeper writes there (0600)
    launcher: str = "native"  #: native | docker
    container: str = ""  #: docker: the container's name
    docker_command: str = "docker"
    log_max_bytes: int = 20 * 1024 * 1024
    log_backups: int = 3

    def write(self, path: Path) -> None:
        """Atomically, as a new 0600 file (never written through a link)."""
        from .files import replace_private

        replace_private(path, [json.dumps(asdict(self), indent=1).encode()])

    def policy(self):
        from .machine import Policy

        return Policy(restart=self.restart, start_timeout=self.start_timeout,
                      health_failures=self.health_failures, restart_unhealthy=self.restart_unhealthy,
                      backoff_base=self.restart_delay, backoff_cap=self.restart_delay_max,
                      crash_limit=self.crash_limit, crash_window=self.crash_window)

    @classmethod
    def read(cls, path: Path) -> "LaunchSpec":
        data = json.loads(path.read_text())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
