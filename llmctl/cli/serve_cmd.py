"""`serve`: the OpenAI-compatible gateway in front of every profile. Thin: options -> GatewayConfig
-> :func:`llmctl.gateway.server.serve`. Starlette, uvicorn and httpx load only when it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Callable, List, Optional

import typer

from ..errors import ExitCode, UsageError
from ..output import Output
from .common import handle_errors, load_config

if TYPE_CHECKING:
    from ..gateway.config import GatewayConfig
    from ..profiles.schema import Config

#: what Ctrl-C does besides stopping the gateway, by --stop-on-exit
ON_EXIT = {"started": " and the servers it started", "all": " and every running server",
           "none": " and leaves the servers running"}


# the options, typed once (their help is `serve --help`)
Host = Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs an API key "
                                   "($LLMCTL_GATEWAY_KEY or --api-key-file).")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]
VramBudget = Annotated[Optional[str], typer.Option(
    "--vram-budget", help="GPU memory the servers may take together, e.g. 22GiB (default: "
    "defaults.vram_budget; none: no budget). Starting one more evicts idle ones, least recently used first.",
    show_default=False)]
MaxConcurrent = Annotated[int, typer.Option(help="Requests one profile serves at once; more get 429.")]
ApiKeyFile = Annotated[Optional[str], typer.Option(
    "--api-key-file", help="File holding the key clients must send (mode 0600). Else $LLMCTL_GATEWAY_KEY.",
    show_default=False)]
StopOnExit = Annotated[str, typer.Option(
    help="On Ctrl-C: stop the servers the gateway started (started), every running profile (all), "
    "or nothing (none).")]
WaitTimeout = Annotated[float, typer.Option(help="Seconds a request may wait for a start or a swap.")]
UpstreamTimeout = Annotated[float, typer.Option(help="Seconds to wait for a server's next byte.")]
PrimaryReturn = Annotated[float, typer.Option(
    help="Idle seconds after which a swap group's primary comes back (members without idle_ttl).")]
AllowHost = Annotated[Optional[List[str]], typer.Option(
    "--allow-host", help="A Host name to answer besides localhost, 127.0.0.1 and [::1] (repeatable). "
    "Other names are refused (DNS rebinding); bound beyond loopback, every name is answered unless "
    "this is given.", show_default=False)]
MaxBodySize = Annotated[str, typer.Option(
    "--max-body-size", help="Largest request body, e.g. 32MiB; larger ones get 413.")]
HeaderTimeout = Annotated[float, typer.Option(
    help="Seconds a client has to send a request's headers before its connection is closed.")]
OllamaPort = Annotated[Optional[int], typer.Option(
    "--ollama-port", help="Also listen on this port, e.g. 11434 (where Ollama clients look by default). "
    "Both ports serve everything: the OpenAI API at /v1, Ollama's at /api.", show_default=False)]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log every request (access log).")]
Watch = Annotated[bool, typer.Option(
    "--watch", help="Reload the profile files when they change (SIGHUP always reloads them).")]


def serve(host: Host = "127.0.0.1", port: Port = 8800, vram_budget: VramBudget = None,
          max_concurrent: MaxConcurrent = 64, api_key_file: ApiKeyFile = None, stop_on_exit: StopOnExit = "started",
          wait_timeout: WaitTimeout = 300.0, upstream_timeout: UpstreamTimeout = 600.0,
          primary_return: PrimaryReturn = 60.0, allow_host: AllowHost = None, max_body_size: MaxBodySize = "32MiB",
          header_timeout: HeaderTimeout = 10.0, ollama_port: OllamaPort = None, verbose: Verbose = False,
          watch: Watch = False) -> None:
    """Serve one OpenAI-compatible endpoint for every profile and task; start servers on demand.

    Clients use http://HOST:PORT/v1 as base URL and a task or profile name as `model`; Ollama
    clients use OLLAMA_HOST=HOST:PORT (or --ollama-port 11434) and the same names. Servers
    start when first asked for, stop after their idle_ttl, swap within exclusive groups and
    within the VRAM budget. Ctrl-C stops the gateway and (--stop-on-exit started) the servers
    it started; servers that were already running are left running. SIGHUP (or, with --watch, a
    change) reloads the profile files: added profiles appear, removed ones are drained and stopped,
    changed ones restart once idle; a file with errors is refused and the old profiles kept.
    """
    from ..gateway.config import GatewayConfig
    from ..gateway.security import resolve_key

    out = Output()
    budget = None if vram_budget is None else _size("--vram-budget", vram_budget)
    key = resolve_key(host, api_key_file)
    gw = GatewayConfig(host=host, port=port, api_key=key, vram_budget=budget, max_concurrent=max_concurrent,
                       stop_on_exit=stop_on_exit, wait_timeout=wait_timeout, upstream_timeout=upstream_timeout,
                       primary_return=primary_return, allow_hosts=tuple(allow_host or ()),
                       max_body=_size("--max-body-size", max_body_size), header_timeout=header_timeout,
                       ollama_port=ollama_port)
    config = load_config()
    _log_to_stderr()
    _sigint_as_in_a_terminal()
    from ..gateway.server import serve as run_gateway

    try:
        run_gateway(config, gw, on_ready=_announce(out, config, gw), log_level="info" if verbose else "warning",
                    access_log=verbose, reload=(load_config, _profile_files, watch))
    except KeyboardInterrupt:
        out.info("gateway stopped")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _profile_files() -> list[str]:
    """The profile files `serve` reads, found again (a new file in a profiles directory counts)."""
    from ..profiles.discovery import discover
    from .context import STATE

    return [str(p) for p in discover(STATE.files)]


def _log_to_stderr() -> None:
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("llmctl.gateway", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("llmctl.gateway").setLevel(logging.INFO)


def _sigint_as_in_a_terminal() -> None:
    """Started as a background job (SIGINT ignored), uvicorn still stops on SIGINT, then re-raises
    it after its shutdown; ignored, that would end `serve` with 0 and no word. Say it and exit 130."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _announce(out: Output, config: Config, gw: GatewayConfig) -> Callable[[str], None]:
    """What `serve` says once it listens."""

    def ready(url: str) -> None:
        tasks = ", ".join(config.tasks) or "none"
        where = "" if gw.host in ("127.0.0.1", "localhost", "::1") else f", listening on {gw.host}"
        out.ok(f"llmctl gateway on {url}/v1{where}  (profiles: {', '.join(config.profiles) or 'none'}; "
               f"tasks: {tasks})")
        out.info(f"Ollama clients: OLLAMA_HOST={gw.ollama_url or url}")
        if gw.api_key:
            out.info("clients must send `Authorization: Bearer KEY`")
        out.info("Ctrl-C stops it" + ON_EXIT.get(gw.stop_on_exit, ""))

    return ready


def _size(option: str, text: str) -> int:
    from ..units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


COMMANDS = {"serve": handle_errors(serve)}
