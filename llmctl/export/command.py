"""A profile's server command for an image: the engine's own builder (the one `up` uses), rendered
once for a container.

The engine builds the :class:`~llmctl.engines.command.ServerCommand` as for the docker launcher
(``local=False``: the image brings the engine); it is rendered with the model at its place inside
(:mod:`.model`), the server bound to every interface inside (the port mapping or the Service
decides who reaches it) and no program (the image's entrypoint is the engine). The API key is
left out of the build: the engine reads it from a variable (``LLAMA_API_KEY``, ``VLLM_API_KEY``)
that the target fills from its own secret store, so its value is never in a file of the export.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..engines.command import File
from ..engines.devices import DEVICE_ENV
from ..engines.registry import engine_for
from ..paths import Paths
from ..profiles.schema import Profile
from .common import ROOT, said, where
from .images import ENTRYPOINTS
from .model import MODEL_MARK, Placement, placement
from .yamlout import Note

#: the variable each engine reads its API key from (llama-server: --api-key's LLAMA_API_KEY)
KEY_ENV = {"llama-server": "LLAMA_API_KEY", "vllm": "VLLM_API_KEY"}

#: flag -> the profile key it comes from (a flag not here comes from the profile's `args:`)
FLAG_KEYS = {
    "-m": "model", "--model": "model", "--host": "host", "--port": "port", "-ngl": "gpu_layers",
    "-c": "ctx_size", "-b": "batch_size", "-ub": "ubatch_size", "-t": "threads", "-np": "parallel",
    "--alias": "alias", "--mmproj": "mmproj", "--embeddings": "embeddings",
    "--served-model-name": "served_model_name", "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len", "--quantization": "quantization", "--dtype": "dtype",
    "--tensor-parallel-size": "tensor_parallel_size", "--trust-remote-code": "trust_remote_code",
}
SWITCHES = ("embeddings", "trust_remote_code")  #: keys whose flag takes no value
#: where a flag's value falls back to another key when the profile does not set the first
FALLBACK_KEYS = {"max_model_len": "ctx_size", "served_model_name": "alias", "gpu_layers": "backend"}

#: POSIX sh, run as ``sh -c WRAPPER sh STORE_DIR PROGRAM ARGS...``: reads the file `llmctl pull`
#: chose from the store entry's manifest (its top-level "path", one line of llmctl's indented
#: JSON) and runs the program with MODEL_MARK replaced by that file
WRAPPER = "\n".join([
    "dir=$1; shift",
    """m=$(sed -n 's/^ "path": "\\(.*\\)",$/\\1/p' "$dir/manifest.json")""",
    """[ -n "$m" ] || { echo "no model in $dir (did llmctl pull run?)" >&2; exit 1; }""",
    f"""for a; do shift; [ "$a" = "{MODEL_MARK}" ] && a="$dir/$m"; set -- "$@" "$a"; done""",
    'exec "$@"',
])


@dataclass
class Server:
    """One profile's server as a container runs it."""

    profile: Profile
    model: Placement
    args: list[str]  #: after the image's entrypoint
    env: dict[str, str]  #: the engine's environment, device variables included
    key_var: str | None  #: the variable the server reads its API key from, when it wants one
    health_path: str
    mounts: list[tuple[str, str]]  #: (directory here, directory inside) of files besides the model

    @property
    def device_vars(self) -> set[str]:
        return {v for names in DEVICE_ENV.values() for v in names}

    def annotated_args(self) -> list[str | Note]:
        """The args, each flag with the profile key it comes from, the model with its origin."""
        p = self.profile
        notes: list[str | Note] = []
        flag = ""  # the flag whose value comes next
        for a in self.args:
            if flag:
                notes.append(self._value_note(a, flag))
                flag = ""
            elif a in FLAG_KEYS:
                notes.append(Note(a, said(p, _key(p, FLAG_KEYS[a]))))
                flag = "" if FLAG_KEYS[a] in SWITCHES else a
            elif a.startswith("-"):
                notes.append(Note(a, said(p, "args")))
            else:
                notes.append(self._value_note(a, ""))
        return notes

    def _value_note(self, value: str, flag: str) -> str | Note:
        if value == self.model.inside and flag in ("", "-m", "--model"):
            return Note(value, self.model.note)
        if flag == "--host":
            return Note(value, f"every interface inside; what reaches it is the target's choice "
                               f"(host: {self.profile.host}, {where(self.profile, 'host')})")
        return value

    def env_notes(self, keep_devices: bool) -> dict[str, str | Note]:
        """The environment with where each variable came from (device variables only if kept)."""
        p = self.profile
        out: dict[str, str | Note] = {}
        for k in sorted(self.env):
            if k in self.device_vars:
                if keep_devices:
                    out[k] = Note(self.env[k], said(p, "devices"))
            elif k in p.env:
                out[k] = Note(self.env[k], said(p, "env"))
            else:
                out[k] = Note(self.env[k], f"llmctl's {p.engine} builder ({said(p, 'backend')})")
        return out

    def wrapper(self) -> list[str] | None:
        """The command that runs the image's engine with the model read at start, or None when
        the argv names the model itself."""
        if MODEL_MARK not in self.args:
            return None
        return ["/bin/sh", "-c", WRAPPER, "sh", self.model.inside_dir, *ENTRYPOINTS[self.profile.engine]]

    def shell_line(self) -> str:
        """The whole command as one shell line (SkyPilot's `run:`), the model as ``"$MODEL"``."""
        words = [*ENTRYPOINTS[self.profile.engine], *self.args]
        return " ".join('"$MODEL"' if w == MODEL_MARK else shlex.quote(w) for w in words)


def _key(profile: Profile, key: str) -> str:
    """The key a flag's value really came from (``--max-model-len``: ``ctx_size`` when the
    profile sets no ``max_model_len``)."""
    if key in profile.lines or key not in FALLBACK_KEYS:
        return key
    other = FALLBACK_KEYS[key]
    return other if other in profile.lines else key


def server(profile: Profile, paths: Paths) -> Server:
    """Build ``profile``'s server command with its engine's builder, for an image."""
    model = placement(profile, paths)
    built = engine_for(profile.engine).command(dataclasses.replace(profile, api_key_env=None),
                                               Path(model.inside), paths, local=False)
    mounts: list[tuple[str, str]] = []
    inside: dict[File, str] = {}
    for f in built.files():
        if f.role == "model":
            inside[f] = model.inside
            continue
        path = Path(f.path).expanduser()
        path = path if path.is_absolute() else profile.base_dir / path
        inside[f] = f"{ROOT}/{f.role}/{path.name}"
        mounts.append((str(path.parent), f"{ROOT}/{f.role}"))
    args = built.argv(program=False, place=inside.__getitem__, bind="0.0.0.0")
    return Server(profile, model, args, dict(built.env), KEY_ENV[profile.engine] if profile.api_key_env else None,
                  built.health_path, mounts)
