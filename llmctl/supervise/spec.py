"""The launch spec a keeper runs (built by :mod:`llmctl.engines`, defined in
:mod:`llmctl.engines.spec`): written as a private file for the keeper, read as its restart policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..engines.spec import LaunchSpec

if TYPE_CHECKING:
    from .machine import Policy

__all__ = ["LaunchSpec", "policy_for", "write_spec"]


def write_spec(spec: LaunchSpec, path: Path) -> None:
    """Atomically, as a new 0600 file (never written through a link)."""
    from .files import replace_private

    replace_private(path, [spec.to_json().encode()])


def policy_for(spec: LaunchSpec) -> Policy:
    from .machine import Policy

    return Policy(restart=spec.restart, start_timeout=spec.start_timeout,
                  health_failures=spec.health_failures, restart_unhealthy=spec.restart_unhealthy,
                  backoff_base=spec.restart_delay, backoff_cap=spec.restart_delay_max,
                  crash_limit=spec.crash_limit, crash_window=spec.crash_window)
