"""llama-server: argv and environment from a profile."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ProfileError
from ..paths import Paths
from ..profiles.schema import Profile
from .apikey import api_key
from .command import Arg, File, Listen, ServerCommand
from .devices import device_env
from .discovery import EngineBinary
from .flags import Capability, UnsafeFlags, passthrough, refusal
from .llama_flags import FLAGS

if TYPE_CHECKING:
    from .registry import Engine
    from .spec import LaunchSpec

#: flags llmctl manages itself -> the profile key to use instead
RESERVED = {
    "-m": "model", "--model": "model", "--host": "host", "--port": "port",
    "-ngl": "gpu_layers", "--gpu-layers": "gpu_layers", "--n-gpu-layers": "gpu_layers",
    "-c": "ctx_size", "--ctx-size": "ctx_size", "-b": "batch_size", "--batch-size": "batch_size",
    "-ub": "ubatch_size", "--ubatch-size": "ubatch_size",
    "--api-key": "api_key_env (keys never go in argv)", "--api-key-file": "api_key_env",
    "--log-file": "(llmctl writes the log)",
}

#: What llama-server can be told to do beyond serving a model, decided from the --help text of
#: the build in llama_flags.SOURCE. Each flag is refused in every spelling (and as its env
#: variable in `env:`) unless the profile sets `allow_unsafe_args: true`; every other flag passes.
#: Allowed after a look, and why: downloads (-hf, -mu, -mmu, -dr, --*-default) fetch weights as
#: `llmctl pull` does and expose nothing; the router flags (--models-dir, --models-preset) do
#: nothing here, as llmctl always passes -m and router mode needs no model; files the profile
#: names (--chat-template-file, --ui-config-file, --grammar-file, --lora, --log-prompts-dir...)
#: are read or written at paths no client chooses; --props lets clients change sampling
#: defaults, not reach files; --cors-*, --api-prefix and --reuse-port change how it answers,
#: not what it can do; --host and --api-key are llmctl's own (RESERVED).
CAPABILITIES = (
    # POST /tools runs read_file, write_file, edit_file and exec_shell_command for anyone who can
    # reach the port, and the model calls them too. --agent is --tools all plus the CORS proxy;
    # --tools-runtime says where the tools run (a container, or a host over ssh).
    Capability("tools", "lets any client of the server, and the model, read, write and edit files and "
               "run shell commands (POST /tools)", ("--tools", "--agent", "--tools-runtime")),
    # Cursor-format MCP configs name commands that llama-server starts; their tools are the model's.
    Capability("mcp", "starts the MCP servers a config names (local commands) and lets the model call "
               "their tools", ("--mcp-servers-config", "--mcp-servers-json")),
    # GET/POST /cors-proxy fetches any URL for any client, including hosts only the server reaches.
    Capability("proxy", "makes the server an open HTTP proxy (/cors-proxy) for any client",
               ("--ui-mcp-proxy",)),
    # Paths chosen by clients: --path serves a directory tree (`--path /` served /etc/shadow),
    # --media-path reads any file under it for file:// URLs, --slot-save-path writes and reads
    # slot files by a client-given name.
    Capability("files", "lets any client of the server read or write local files by path",
               ("--path", "--media-path", "--slot-save-path")),
    # ggml RPC is unauthenticated and unencrypted: weights, and activations of every prompt, leave.
    Capability("network", "sends the model and the activations of every prompt to other hosts over "
               "ggml's unauthenticated RPC protocol", ("--rpc",)),
    # llama-server runs DIR/ffmpeg and DIR/ffprobe on clients' videos.
    Capability("programs", "runs the programs ffmpeg and ffprobe from the directory it names",
               ("--video-ffmpeg-dir",)),
)
#: every spelling and env variable of the flags in CAPABILITIES (cli_runner imports it too)
UNSAFE = UnsafeFlags(FLAGS, CAPABILITIES)


def check_env(profile: Profile) -> None:
    """Refuse a profile whose `env:` sets a dangerous flag's variable (LLAMA_ARG_AGENT...)."""
    if profile.allow_unsafe_args:
        return
    for name in profile.env:
        hit = UNSAFE.env(name)
        if hit:
            raise ProfileError(refusal(profile.where("env"), f"env.{name}", *hit, via="this variable sets"))


def check_profile(profile: Profile) -> None:
    """What `up` refuses in a llama-server profile's `args:` and `env:`, without starting
    anything (for `profiles validate`)."""
    passthrough(profile.args, reserved=RESERVED, unsafe=UNSAFE, allow_unsafe=profile.allow_unsafe_args,
                where=profile.where("args"))
    check_env(profile)


def load_flags(profile: Profile) -> list[str]:
    """How the model is loaded (-ngl -c -b -ub -t): shared by llama-server and the one-shot
    tools (llama-completion, llama-cli, llama-mtmd-cli), so both modes of `run` load alike."""
    p = profile
    gpu_layers = p.gpu_layers if p.gpu_layers is not None else (0 if p.backend == "cpu" else None)
    out: list[str] = []
    for flag, value in (("-ngl", gpu_layers), ("-c", p.ctx_size), ("-b", p.batch_size),
                        ("-ub", p.ubatch_size), ("-t", p.threads)):
        if value is not None:
            out += [flag, str(value)]
    return out


def server_args(profile: Profile, model_path: Path | str, key_file: Path | None = None) -> list[Arg]:
    """llama-server's flags (no secrets: the key travels in a 0600 file), its files and bind
    address typed for the launcher to place."""
    p = profile
    args: list[Arg] = ["-m", File("model", str(model_path)), "--host", Listen(p.host), "--port", str(p.port)]
    args += load_flags(p)
    for flag, value in (("-np", p.parallel), ("--alias", p.alias)):
        if value is not None:
            args += [flag, str(value)]
    if p.mmproj is not None:
        args += ["--mmproj", File("mmproj", str(p.mmproj))]
    if p.embeddings:
        args.append("--embeddings")
    if key_file is not None:
        args += ["--api-key-file", File("key", str(key_file))]
    args += passthrough(p.args, reserved=RESERVED, unsafe=UNSAFE,
                        allow_unsafe=p.allow_unsafe_args, where=p.where("args"))
    return args


def server_argv(profile: Profile, binary: str, model_path: Path | str, key_file: Path | None = None) -> list[str]:
    """The full argv for llama-server run here (no secrets: the key travels in a 0600 file)."""
    return [binary, *ServerCommand(profile.engine, [], server_args(profile, model_path, key_file),
                                   profile.host, profile.port).argv()]


def key_file_for(profile: Profile, paths: Paths) -> Path | None:
    """Where the API key named by ``api_key_env`` will be (None when the profile has none). The
    variable must be set now; the file itself is written by the keeper, which holds the
    profile's lock, just before it starts the server (the keeper), so an `up` that
    fails can never remove the key of another that is starting."""
    if api_key(profile) is None:
        return None
    return paths.key_file(profile.name)


def find_binary(profile: Profile) -> EngineBinary:
    """The llama-server build for this profile: its `binary:` (relative to its file), the user
    config's build for its backend, PATH, the Python packages."""
    from .discovery import find_llama

    binary = profile.binary
    if binary and not Path(binary).expanduser().is_absolute():
        binary = str(profile.base_dir / binary)
    return find_llama("llama-server", binary, profile.backend)


def build(profile: Profile, engine: EngineBinary, model_path: Path, paths: Paths) -> ServerCommand:
    """The server command with a given build of llama-server."""
    check_env(profile)
    key_file = key_file_for(profile, paths)
    env = dict(engine.env)
    env.update(device_env(profile.backend, profile.devices))
    env.update(profile.env)
    var = profile.api_key_env
    return ServerCommand(profile.engine, [engine.path], server_args(profile, model_path, key_file),
                         profile.host, profile.port, env=env, unset_env=[var] if var else [],
                         key_files={str(key_file): var} if key_file and var else {})


class LlamaServer:
    """llama.cpp's server, found on this machine or brought by an image."""

    name = "llama-server"

    def check(self, profile: Profile) -> None:
        check_profile(profile)

    def command(self, profile: Profile, model: Path, paths: Paths, *, local: bool) -> ServerCommand:
        engine = find_binary(profile) if local else EngineBinary("llama-server", "image")
        return build(profile, engine, model, paths)


ENGINE: Engine = LlamaServer()


def launch_spec(profile: Profile, engine: EngineBinary, model_path: Path, paths: Paths) -> LaunchSpec:
    """The launch spec that runs this build here (the native launcher)."""
    from .launch import spec_with

    return spec_with(profile, build(profile, engine, model_path, paths), "native")
