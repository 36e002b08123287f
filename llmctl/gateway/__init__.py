"""The gateway (`llmctl serve`): one OpenAI-compatible endpoint in front of every profile.

    from llmctl import load_profiles
    from llmctl.gateway import GatewayConfig, build_app, serve
    app = build_app(load_profiles(["llmctl.yaml"]), GatewayConfig(port=8800))   # an ASGI app
    serve(load_profiles(["llmctl.yaml"]), GatewayConfig(port=8800))             # or run it (blocks)

Modules: config (settings), routing (the request's `model` -> task/profiles, parameters),
policy (the pure decisions: admit, wait, start with victims, refuse; idle TTL, primary return,
budget), states (GatewayState and its transition table), pool (the ONE owner of routing state:
carries the decisions out; its records in records, its clock and supervisor refresh in reaper),
control (the blocking Supervisor calls the pool runs in worker threads), proxy (upstream
forwarding and SSE passthrough), messages (Anthropic's Messages API; its translation to and
from chat completions, pure, in anthropic and anthropic_stream), metrics (Prometheus text),
security (keys, binding), app (the Starlette app), server (uvicorn: foreground or in a thread).
Starlette, uvicorn and httpx are imported only by app/proxy/server and the routes app loads
(messages).
"""

from __future__ import annotations

__all__ = ["GatewayConfig", "build_app", "serve", "start_in_thread"]

_WHERE = {"GatewayConfig": "config", "build_app": "app", "serve": "server", "start_in_thread": "server"}


def __getattr__(name: str):  # lazy: importing the package costs nothing
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
