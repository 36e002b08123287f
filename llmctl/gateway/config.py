"""The gateway's settings (what `llmctl serve` options set)."""

from __future__ import annotations

from dataclasses import dataclass, field

STOP_POLICIES = ("started", "all", "none")
MIB = 1 << 20


@dataclass
class GatewayConfig:
    """How the gateway listens and manages servers. Field comments are the `serve --help` text."""

    host: str = "127.0.0.1"  #: address to bind; anything but loopback needs ``api_key``
    port: int = 8800
    api_key: str | None = field(default=None, repr=False)  #: clients send ``Authorization: Bearer KEY``
    vram_budget: int | None = None  #: bytes; None: ``defaults.vram_budget``, else no budget
    max_concurrent: int = 64  #: requests one profile serves at once; more get 429
    wait_timeout: float = 300.0  #: seconds a request may wait for a start, a swap or an idle member
    upstream_timeout: float = 600.0  #: seconds without a byte from the server before 504
    stop_on_exit: str = "started"  #: started (what the gateway started) | all (every profile) | none
    primary_return: float = 60.0  #: idle seconds before a group's primary comes back (members without idle_ttl)
    refresh_interval: float = 2.0  #: seconds between reads of the supervisor's state (0: never)
    retry_failed_after: float = 2.0  #: a failed start answers 503 at once for this long, then is retried
    gpu_total: int | None = None  #: bytes of one GPU, for vLLM estimates (None: unknown)
    allow_hosts: tuple[str, ...] = ()  #: Host names answered besides loopback ones (bound elsewhere: only these)
    max_body: int = 32 * MIB  #: bytes a request body may have; more get 413
    header_timeout: float = 10.0  #: seconds a client has to send a request's headers; then it is cut off
    ollama_port: int | None = None  #: a second port serving the same (e.g. 11434, Ollama clients' default)

    def __post_init__(self) -> None:
        from ..errors import UsageError

        if self.stop_on_exit not in STOP_POLICIES:
            raise UsageError(f"--stop-on-exit {self.stop_on_exit!r}: expected one of {', '.join(STOP_POLICIES)}")
        if self.max_concurrent < 1:
            raise UsageError("--max-concurrent must be at least 1")
        if self.max_body < 1:
            raise UsageError("--max-body-size must be at least 1 byte")
        if not self.header_timeout > 0:
            raise UsageError("--header-timeout must be more than 0 seconds")
        from .security import normalize_host

        self.allow_hosts = tuple(normalize_host(h) for h in self.allow_hosts)

    @property
    def url(self) -> str:
        from ..profiles.schema import client_url

        return client_url(self.host, self.port)

    @property
    def ollama_url(self) -> str | None:
        from ..profiles.schema import client_url

        return None if self.ollama_port is None else client_url(self.host, self.ollama_port)
