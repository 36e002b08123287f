"""The profile format: typed dataclasses whose field ``help`` becomes documentation.

A YAML file holds three top-level keys: ``profiles`` (name -> :class:`Profile`), ``tasks``
(name -> :class:`Task`) and ``defaults`` (:class:`Defaults`). The loader checks every key and
type against these classes; nothing else is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")  # \Z: a trailing newline is no name
NAME_MAX = 64  #: longest profile, task or group name

Engine = Literal["llama-server", "vllm", "remote"]
Backend = Literal["cpu", "cuda", "rocm", "vulkan", "metal"]
Launcher = Literal["native", "docker"]
CONTAINER_KEY = "docker"  #: the profile key holding a container launcher's settings (`docker:`)
RestartPolicy = Literal["no", "on-failure", "always"]


def _f(default: Any = None, help: str = "", factory: Any = None, **bounds: float) -> Any:
    """A field with its help text and, for numbers, its bounds (``gt``, ``ge``, ``le``) that the
    loader checks."""
    meta = {"help": help, **bounds}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


REQUIRED = object()  # default of keys the YAML must give

#: the keys a profile with ``engine: remote`` may have (a server llmctl does not start: how to
#: reach it and what to call it; nothing about running it)
REMOTE_KEYS = frozenset({"engine", "url", "model", "api_key_env", "health", "verify", "embeddings",
                         "max_concurrent", "description"})
#: the keys only a remote profile has
REMOTE_ONLY = frozenset({"url", "health", "verify"})


def client_url(host: str, port: int) -> str:
    """The URL a local client uses for a server bound to ``host:port`` (a wildcard bind is
    reached on loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def url_port(url: str) -> int:
    """The TCP port of an http(s) base URL (its scheme's default when it names none); 0 when
    the URL is no http(s) URL (the loader reports it)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        return 0
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    port = netloc.rpartition("]")[2] if netloc.startswith("[") else netloc
    _, colon, digits = port.rpartition(":")
    if colon:
        return int(digits) if digits.isdigit() else 0
    return 443 if scheme == "https" else 80


class _BaseUrl:
    """The ``url`` field: what a remote profile wrote, else the URL a local server is reached at
    (computed from ``host`` and ``port`` when read, so it follows them)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        written = obj.__dict__.get(self.slot)
        return written if written else client_url(obj.host, obj.port)

    def __set__(self, obj: Any, value: Any) -> None:
        if isinstance(value, str):
            value = value.rstrip("/")  # a base URL: paths are appended to it
        obj.__dict__[self.slot] = None if isinstance(value, _BaseUrl) else value

    def __str__(self) -> str:  # the default, as docs/profiles.md shows it
        return "http://HOST:PORT"


class Located:
    """Mixin for things read from a file: ``source`` and per-key ``lines``."""

    source: str
    lines: dict[str, int]

    def where(self, key: str | None = None) -> str:
        """``file:line`` of this entry, or of one of its keys."""
        line = self.lines.get(key or "", self.lines.get("", 0))
        return f"{self.source}:{line}" if self.source else "<memory>"


@dataclass
class Docker:
    """How to run the engine inside a container (``launcher: docker``)."""

    image: str = _f(REQUIRED, "container image, e.g. ghcr.io/ggml-org/llama.cpp:server-rocm")
    devices: list[str] = _f(help="host devices passed through (--device)", factory=list)
    options: list[str] = _f(help="extra `docker run` options, as an argv list", factory=list)
    command: str = _f("docker", "the container CLI: docker or podman")


@dataclass
class Sampling:
    """Sampling parameters (``defaults.sampling`` and every task)."""

    temperature: float | None = _f(None, "sampling temperature", ge=0)
    top_p: float | None = _f(None, "nucleus sampling threshold", ge=0, le=1)
    top_k: int | None = _f(None, "keep only the K most likely tokens", ge=0)
    min_p: float | None = _f(None, "minimum probability relative to the top token", ge=0, le=1)
    presence_penalty: float | None = _f(None, "penalty for tokens already present")
    frequency_penalty: float | None = _f(None, "penalty growing with token frequency")
    repeat_penalty: float | None = _f(None, "llama.cpp repeat penalty")
    mirostat: int | None = _f(None, "mirostat mode: 0 off, 1 or 2", ge=0, le=2)
    mirostat_tau: float | None = _f(None, "mirostat target entropy", ge=0)
    mirostat_eta: float | None = _f(None, "mirostat learning rate", ge=0)
    seed: int | None = _f(None, "random seed")
    max_tokens: int | None = _f(None, "most tokens to generate", ge=1)
    stop: list[str] | None = _f(None, "stop sequences")


@dataclass
class Task(Sampling, Located):
    """A named job (summary, reasoning...) routed to a profile, with its own sampling."""

    profile: str = _f(REQUIRED, "the profile that serves this task")
    fallback: list[str] = _f(help="profiles tried in order when `profile` is not running", factory=list)
    system: str | None = _f(None, "system prompt sent with every request of this task")
    description: str = _f("", "what the task is for")
    name: str = field(default="", metadata={"internal": True})
    source: str = field(default="", metadata={"internal": True})
    lines: dict[str, int] = field(default_factory=dict, metadata={"internal": True})


@dataclass
class Defaults:
    """File-wide defaults."""

    sampling: Sampling = _f(help="sampling parameters every task starts from", factory=Sampling)
    vram_budget: str | dict[str, str] | None = _f(
        None, "GPU memory llmctl may fill, e.g. 22GiB or 20000MiB, or per GPU {0: 70GiB, 1: 22GiB}, or `free`: each "
        "GPU's free memory when the gateway starts, per GPU (default: none; `up` checks against what is free)")
    min_resident: float = _f(3.0, "gateway: seconds a loaded server stays before another request may evict it "
                             "(its requests meanwhile are served together)", ge=0)


@dataclass
class Group(Located):
    """A swap group: profiles that share a GPU (the gateway keeps one member loaded)."""

    exclusive: bool = _f(True, "starting one member stops the others first")
    primary: str | None = _f(None, "the member brought back when the others go idle")
    description: str = _f("", "what the group is for")
    name: str = field(default="", metadata={"internal": True})
    source: str = field(default="", metadata={"internal": True})
    lines: dict[str, int] = field(default_factory=dict, metadata={"internal": True})


@dataclass
class Profile(Located):
    """One server: an engine, a model and how to run it."""

    model: str = _f(REQUIRED, "a .gguf path (relative to this file), an imported model name, or a reference; "
                    "remote: the served model name to ask for (optional)")
    port: int = _f(REQUIRED, "TCP port the server listens on (not for remote)")
    engine: Engine = _f("llama-server", "llama-server | vllm | remote (a server llmctl does not start: "
                        "only url, model, api_key_env, health, verify, embeddings, max_concurrent)")
    url: str = _f(_BaseUrl(), "remote: the server's http(s) base URL, e.g. https://gpu-box:8080 (a local "
                  "server's is made from host and port)")
    health: str | None = _f(None, "remote: the health path probed (default /health, then /v1/models)")
    verify: bool = _f(True, "remote: verify the https certificate (false only for a server you trust)")
    host: str = _f("127.0.0.1", "address to bind; loopback unless you mean it")
    backend: Backend = _f("cpu", "cpu | cuda | rocm | vulkan | metal")
    devices: list[str] = _f(help="GPU ids made visible to the server", factory=list)
    gpu_layers: int | None = _f(None, "layers offloaded to the GPU (-ngl)", ge=-1)
    ctx_size: int | None = _f(None, "context size in tokens (-c)", ge=0)
    batch_size: int | None = _f(None, "logical batch size (-b)", ge=1)
    ubatch_size: int | None = _f(None, "physical batch size (-ub)", ge=1)
    threads: int | None = _f(None, "CPU threads (-t)", ge=-1)
    parallel: int | None = _f(None, "parallel request slots (-np)", ge=1)
    alias: str | None = _f(None, "model name the server reports (--alias / --served-model-name)")
    mmproj: str | None = _f(None, "multimodal projector file (--mmproj)")
    embeddings: bool = _f(False, "serve /v1/embeddings (--embeddings)")
    launcher: Launcher = _f("native", "native | docker")
    binary: str | None = _f(None, "the engine executable; found automatically when unset")
    command: list[str] | None = _f(None, "vLLM: the argv prefix that starts the server")
    args: dict[str, Any] = _f(help="engine flags passed through: {flash-attn: 'on'} -> --flash-attn on", factory=dict)
    env: dict[str, str] = _f(help="extra environment variables for the server", factory=dict)
    api_key_env: str | None = _f(None, "environment variable holding the API key (never put in argv)")
    restart: RestartPolicy = _f("on-failure", "no | on-failure | always")
    start_timeout: float | None = _f(None, "seconds to wait for health (default 300; vLLM 900)", gt=0)
    stop_timeout: float = _f(10.0, "seconds between the stop signal and SIGKILL", gt=0)
    health_interval: float = _f(5.0, "seconds between health probes once running", gt=0)
    health_failures: int = _f(3, "failed probes in a row before `unhealthy`", ge=1)
    restart_unhealthy: bool = _f(False, "restart the server when it turns `unhealthy`")
    restart_delay: float = _f(1.0, "first restart delay in seconds; doubles per quick death", ge=0)
    restart_delay_max: float = _f(60.0, "cap of the restart delay", ge=0)
    crash_limit: int = _f(5, "deaths within crash_window that mark the server `failed`", ge=1)
    crash_window: float = _f(300.0, "seconds over which crash_limit counts deaths", gt=0)
    allow_unsafe_args: bool = _f(False, "acknowledge engine flags that run tools or shells")
    docker: Docker | None = _f(None, "container settings for `launcher: docker`")
    gpu_memory_utilization: float | None = _f(None, "vLLM: fraction of GPU memory to use", gt=0, le=1)
    max_model_len: int | None = _f(None, "vLLM: context length", ge=1)
    quantization: str | None = _f(None, "vLLM: quantization method (awq, gptq...)")
    dtype: str | None = _f(None, "vLLM: weights dtype")
    served_model_name: str | None = _f(None, "vLLM: model name in the API")
    tensor_parallel_size: int | None = _f(None, "vLLM: GPUs to split the model over", ge=1)
    trust_remote_code: bool = _f(False, "vLLM: run the model repo's own code")
    idle_ttl: float | None = _f(None, "gateway: stop after this many idle seconds", gt=0)
    max_concurrent: int | None = _f(None, "gateway: requests sent to this server at once; more get 429 "
                                    "(default: serve --max-concurrent)")
    group: str | None = _f(None, "gateway: the swap group (defined under `groups:`) this profile is in")
    min_resident: float | None = _f(None, "gateway: seconds it stays once loaded before it may be evicted "
                                    "(default: defaults.min_resident)", ge=0)
    description: str = _f("", "what this server is for")
    name: str = field(default="", metadata={"internal": True})
    source: str = field(default="", metadata={"internal": True})
    lines: dict[str, int] = field(default_factory=dict, metadata={"internal": True})

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def __post_init__(self) -> None:
        if self.engine == "remote":  # neither is required: the URL says where, the server what
            if self.port is REQUIRED:
                self.port = url_port(self.url)
            if self.model is REQUIRED:
                self.model = ""

    @property
    def remote(self) -> bool:
        """A server llmctl does not start (``engine: remote``)."""
        return self.engine == "remote"

    @staticmethod
    def optional_keys(values: dict[str, Any]) -> frozenset[str]:
        """Required keys that the values read so far make optional (the binder asks)."""
        return frozenset({"model", "port"}) if values.get("engine") == "remote" else frozenset()

    def launcher_problem(self) -> str | None:
        """What the profile lacks for its launcher: the container settings `launcher: docker` needs."""
        if self.launcher == "docker" and self.docker is None:
            return "`launcher: docker` needs a `docker:` mapping with an `image:`"
        return None

    @property
    def effective_start_timeout(self) -> float:
        if self.start_timeout is not None:
            return self.start_timeout
        return 900.0 if self.engine == "vllm" else 300.0


@dataclass
class Config:
    """Everything loaded from the profile files."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    defaults: Defaults = field(default_factory=Defaults)
    files: list[str] = field(default_factory=list)

    def profile(self, name: str) -> Profile:
        from ..errors import UnknownProfile

        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise UnknownProfile(f"no profile named {name!r} (defined: {known})") from None
