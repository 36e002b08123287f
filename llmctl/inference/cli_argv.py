"""cli mode's command: which one-shot tool answers a request, and its argv (model, the load
flags llama-server gets, sampling, the system prompt, the profile's `args:` the tool takes,
the prompt). The argv holds the prompts as given, for --dry-run; :mod:`.cli_files` moves them
into private files before the tool runs."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..paths import Paths
from ..profiles.schema import Profile
from .params import Params, tool_flags

if TYPE_CHECKING:
    from ..engines.discovery import EngineBinary

_FLAG_RE = re.compile(r"^\s*(-{1,2}[A-Za-z0-9][\w-]*(?:,\s+-{1,2}[A-Za-z0-9][\w-]*)*)")
#: what each tool needs after the shared flags: the chat template, one turn, only the answer
TOOL_FLAGS = {
    "llama-completion": ["--jinja", "-cnv", "-st", "--no-display-prompt", "--no-warmup"],
    "llama-cli": ["--jinja", "-st", "--simple-io", "--no-show-timings", "--no-warmup"],
    "llama-mtmd-cli": ["--jinja"],
}


@dataclass
class CliCommand:
    """A one-shot command, ready to run (and to show in --dry-run)."""

    tool: str  #: llama-completion | llama-cli | llama-mtmd-cli
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  #: added to the caller's environment
    skipped_args: list[str] = field(default_factory=list)  #: profile `args:` this tool does not take
    prompt: str = ""
    system: str = ""  #: the system prompt (after -sys in argv)

    def public(self) -> dict[str, Any]:
        """What --dry-run shows: the argv with the prompts in it (when run, they go in files:
        :func:`llmctl.inference.cli_files.private_argv`)."""
        return {"tool": self.tool, "argv": self.argv, "env": self.env, "skipped_args": self.skipped_args}


def _binary(profile: Profile, tool: str) -> EngineBinary:
    from ..engines.discovery import find_llama

    binary = profile.binary
    if binary and not Path(binary).expanduser().is_absolute():
        binary = str(profile.base_dir / binary)
    found = find_llama(tool, binary, profile.backend)
    if not os.path.isabs(found.path):  # e.g. from a relative PATH entry: the tool runs elsewhere
        found = replace(found, path=os.path.abspath(found.path))
    return found


def pick_tool(profile: Profile, images: list[str] | None) -> tuple[str, EngineBinary]:
    """The tool for this request and its binary: llama-mtmd-cli for images, else
    llama-completion, else llama-cli."""
    from ..errors import EngineNotFound

    if images:
        return "llama-mtmd-cli", _binary(profile, "llama-mtmd-cli")
    try:
        return "llama-completion", _binary(profile, "llama-completion")
    except EngineNotFound:
        return "llama-cli", _binary(profile, "llama-cli")


def cli_command(profile: Profile, params: Params, prompt: str, images: list[str] | None = None,
                paths: Paths | None = None, tool: str | None = None) -> CliCommand:
    """Build the argv: model, load flags (shared with llama-server), sampling, system prompt,
    the profile's `args:` that this tool accepts, the prompt."""
    from ..engines.devices import device_env
    from ..engines.llama_server import load_flags
    from ..models.resolve import resolve_model

    if profile.engine != "llama-server":
        raise UsageError(f"profile {profile.name!r}: cli mode needs a llama-server profile "
                         f"(engine is {profile.engine}); start it and use --mode server")
    if tool:
        engine = _binary(profile, tool)
    else:
        tool, engine = pick_tool(profile, images)
    model = resolve_model(profile, paths)
    argv = [engine.path, "-m", os.path.abspath(model)]
    if tool == "llama-mtmd-cli":
        argv += ["--mmproj", _mmproj(profile)]
    argv += load_flags(profile)
    argv += tool_flags(params)
    if params.system:
        argv += ["-sys", params.system]
    argv += TOOL_FLAGS.get(tool, TOOL_FLAGS["llama-mtmd-cli"])
    extra, skipped = _profile_args(profile, engine.path)
    argv += extra
    for image in images or []:
        argv += ["--image", os.path.abspath(Path(image).expanduser())]
    argv += ["-p", prompt]
    env = dict(engine.env)
    env.update(device_env(profile.backend, profile.devices))
    env.update(profile.env)
    return CliCommand(tool, argv, env, skipped, prompt, params.system or "")


def _mmproj(profile: Profile) -> str:
    """The profile's `mmproj:` as an absolute path (llama-mtmd-cli cannot read images without it)."""
    if not profile.mmproj:
        raise UsageError(f"profile {profile.name!r} has no `mmproj:`, so it cannot read images "
                         f"({profile.where()})")
    mmproj = Path(profile.mmproj).expanduser()
    if not mmproj.is_absolute():
        mmproj = profile.base_dir / mmproj
    return os.path.abspath(mmproj)


def _profile_args(profile: Profile, binary: str) -> tuple[list[str], list[str]]:
    """The profile's `args:` (server flags in the engine's spelling) that ``binary`` also takes;
    server-only ones (--metrics, --slots...) are skipped and reported."""
    if not profile.args:
        return [], []
    from ..engines.flags import flag_name, passthrough
    from ..engines.llama_server import RESERVED, UNSAFE

    known = accepted_flags(binary)
    keep, skipped = {}, []
    for key, value in profile.args.items():
        if flag_name(key) in known:
            keep[key] = value
        else:
            skipped.append(flag_name(key))
    argv = passthrough(keep, reserved=RESERVED, unsafe=UNSAFE, allow_unsafe=profile.allow_unsafe_args,
                       where=profile.where("args"))
    return argv, skipped


def accepted_flags(binary: str) -> set[str]:
    """Every flag spelling ``binary --help`` lists."""
    try:
        text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, cwd="/").stdout  # no libggml-*.so from the user's cwd
    except (OSError, subprocess.TimeoutExpired):
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        m = _FLAG_RE.match(line)
        if m:
            flags.update(f.strip() for f in m.group(1).split(","))
    return flags
