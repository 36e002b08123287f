"""Run the gateway with uvicorn: in the foreground (`llmctl serve`) or in a background thread
(to embed it in a Python program, or in tests)::

    from llmctl.gateway import GatewayConfig, start_in_thread
    gw = start_in_thread(config, GatewayConfig(port=0))    # port 0: a free one
    ... gw.url ...
    gw.stop()                                            # stops what it started (stop_on_exit)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from ..errors import LlmctlError, PortInUse
from ..paths import Paths
from ..profiles.schema import Config
from .config import GatewayConfig

if TYPE_CHECKING:
    from .control import ServerControl

#: what `serve` reloads from: load the profiles, list their files, watch them (gateway/reload.py)
Reload = tuple[Callable[[], Config], Callable[[], list[str]], bool]


def bind(host: str, port: int, option: str = "--port") -> socket.socket:
    """The listening socket (bound here so that a busy port is a clear error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP;
    # without it every keep-alive request waits ~40 ms (Nagle + delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"the gateway cannot listen on {host}:{port}: {exc.strerror or exc}; "
                        f"pick another with {option}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def listen(gw: GatewayConfig) -> list[socket.socket]:
    """The listening sockets: ``gw.port``, and ``gw.ollama_port`` when set (0: a free port; ``gw``
    then says which)."""
    sock = bind(gw.host, gw.port)
    gw.port = sock.getsockname()[1]
    if gw.ollama_port is None:
        return [sock]
    try:
        extra = bind(gw.host, gw.ollama_port, "--ollama-port")
    except BaseException:
        sock.close()
        raise
    gw.ollama_port = extra.getsockname()[1]
    return [sock, extra]


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway's event loop: uvloop's where it is installed (libuv: fewer system calls
    and less Python per request than asyncio's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _server(app, gw: GatewayConfig, log_level: str, access_log: bool):
    import uvicorn

    from .protocol import protocol_class

    cfg = uvicorn.Config(app, host=gw.host, port=gw.port, log_level=log_level, access_log=access_log,
                         lifespan="on", timeout_graceful_shutdown=5, ws="none", log_config=None,
                         http=protocol_class(gw.header_timeout))
    server = uvicorn.Server(cfg)
    app.state.server = server  # its should_exit ends the dashboard's endless log streams (llmctl.gateway.ui)
    return server


def serve(config: Config, gw: GatewayConfig, *, paths: Paths | None = None,
          on_ready: Callable[[str], None] | None = None, log_level: str = "warning",
          access_log: bool = False, reload: Reload | None = None) -> list[str]:
    """Serve until SIGINT/SIGTERM (which uvicorn re-raises once the gateway has stopped the
    servers it should); return the names stopped on exit. ``reload``: (load the profiles, list
    their files, watch them): SIGHUP (and with watch, a changed file) reloads them
    (:mod:`llmctl.gateway.reload`)."""
    from .app import build_app

    app = build_app(config, gw, paths=paths)
    socks = listen(gw)
    server = _server(app, gw, log_level, access_log)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=socks))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        reloader = None
        if server.started and reload is not None:
            from .reload import Reloader

            reloader = Reloader(app.state.gateway, *reload)
            reloader.start()
        if server.started and on_ready:
            on_ready(gw.url)
        try:
            await task
        finally:
            if reloader is not None:
                await reloader.stop()
        if not server.started:
            raise LlmctlError("the gateway failed to start (see the messages above)")

    try:
        run_loop(main())
    finally:
        for sock in socks:
            sock.close()
    return app.state.gateway.stopped_on_exit


class RunningGateway:
    """A gateway serving in a background thread; :meth:`stop` ends it (and the servers it
    started, per ``stop_on_exit``)."""

    def __init__(self, app, server, thread: threading.Thread, url: str) -> None:
        self.app, self.server, self.thread, self.url = app, server, thread, url

    @property
    def gateway(self):
        return self.app.state.gateway

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> RunningGateway:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(config: Config, gw: GatewayConfig | None = None, *, paths: Paths | None = None,
                    control: ServerControl | None = None, ready_timeout: float = 30.0,
                    log_level: str = "warning") -> RunningGateway:
    """Serve in a daemon thread with its own event loop; return once it accepts requests.
    ``gw.port`` 0 picks a free port (``.url`` says which)."""
    from .app import build_app

    gw = gw or GatewayConfig(port=0)
    app = build_app(config, gw, paths=paths, control=control)
    socks = listen(gw)
    server = _server(app, gw, log_level, False)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_loop(server.serve(sockets=socks))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)
        finally:
            for sock in socks:
                sock.close()

    thread = threading.Thread(target=run, name=f"llmctl-gateway-{gw.port}", daemon=True)
    thread.start()
    import time

    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(10)
            raise LlmctlError(f"the gateway did not start: {failure[0] if failure else 'see the log'}")
        time.sleep(0.01)
    return RunningGateway(app, server, thread, gw.url)
