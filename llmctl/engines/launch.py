"""From a profile to a launch spec: pick the engine and the launcher."""

from __future__ import annotations

from pathlib import Path

from ..paths import Paths
from ..profiles.schema import Profile
from ..supervise.spec import LaunchSpec


def spec_for(profile: Profile, paths: Paths) -> LaunchSpec:
    """Resolve the model and the engine binary and build the argv + env (nothing starts)."""
    from ..models.resolve import resolve_model

    model = resolve_model(profile, paths)
    if profile.engine == "vllm":
        from .vllm import launch_spec as vllm_spec

        placeholder = ["vllm", "serve"] if profile.launcher == "docker" else None  # the image has vLLM
        spec = vllm_spec(profile, model, paths, command=placeholder)
    else:
        from .discovery import EngineBinary, find_llama
        from .llama_server import launch_spec as llama_spec

        binary = profile.binary
        if binary and not Path(binary).expanduser().is_absolute():
            binary = str(profile.base_dir / binary)
        if profile.launcher == "docker":
            engine = EngineBinary("llama-server", "docker")  # the image brings its own
        else:
            engine = find_llama("llama-server", binary, profile.backend)
        spec = llama_spec(profile, engine, model, paths)
    if profile.launcher == "docker":
        from .docker import containerize

        spec = containerize(profile, spec, model, paths)
    return spec
