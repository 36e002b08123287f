"""Servers that come and go with the load, with real llama-servers (SmolLM2, ~1 s to start):
idle unload, an exclusive group swap that waits for the request in flight and the primary's
return, the VRAM budget evicting the least recently used idle server, and what the scheduler
measures (start time, arrivals, request length) taken live. Each test runs its
own gateway in this process; stopping it stops what it started. Where a request must still be
in flight when the test looks, the server is tests/helpers/slow_server.py, slow on purpose (a
tiny model on a fast CPU may finish first)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from .util import free_port, wait_for

pytestmark = [pytest.mark.engine]
HI = [{"role": "user", "content": "Hi"}]
STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]
SLOW = str(Path(__file__).parent / "helpers" / "slow_server.py")


def small(model, **extra) -> str:
    fields = {"model": str(model), "port": free_port(), "ctx_size": 512, "threads": 1, **extra}
    return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"


def setup(tmp_path, text: str, **gw):
    from llmctl import Supervisor, load_profiles
    from llmctl.gateway import GatewayConfig, start_in_thread

    f = tmp_path / "llmctl.yaml"
    f.write_text(text)
    config = load_profiles([str(f)])
    running = start_in_thread(config, GatewayConfig(port=0, **gw))
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="none", max_retries=0, timeout=120)
    return config, running, client, Supervisor(config)


def states(sup, *names) -> dict[str, str]:
    return {e.name: e.state for e in sup.status(list(names))}


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_idle_server_is_stopped_after_its_ttl_and_restarted_on_demand(tmp_path, smollm2, llama_server):
    config, gw, c, sup = setup(tmp_path, f"profiles:\n  brief: {small(smollm2, idle_ttl=1.5)}\n",
                               refresh_interval=0.5)
    try:
        c.chat.completions.create(model="brief", messages=HI, max_tokens=2)
        assert states(sup, "brief") == {"brief": "running"}
        t0 = time.monotonic()
        wait_for(lambda: states(sup, "brief")["brief"] == "stopped", 15, "the idle stop")
        waited = time.monotonic() - t0
        assert waited >= 1.0  # not before its idle_ttl
        wait_for(lambda: metric(gw.url, 'llmctl_gateway_stops_total{profile="brief",reason="idle"}') == 1, 5,
                 "the idle stop to be counted")
        c.chat.completions.create(model="brief", messages=HI, max_tokens=2)  # on demand again
        assert metric(gw.url, 'llmctl_gateway_starts_total{profile="brief",outcome="ok"}') == 2
    finally:
        gw.stop()
    assert states(sup, "brief") == {"brief": "stopped"}


def test_exclusive_swap_waits_for_the_request_in_flight_then_the_primary_returns(tmp_path, smollm2, llama_server):
    """side's request waits while main streams, then main is swapped out for side; side idles
    and main comes back. main is the slow server (a piece every 0.1 s, on purpose: its stream
    is in flight for 4 s on any CPU); side is a real llama-server."""
    text = f"""
profiles:
  main: {small(smollm2, group="duo", binary=SLOW, stop_timeout=5)}
  side: {small(smollm2, group="duo", idle_ttl=2)}
groups:
  duo: {{exclusive: true, primary: main}}
"""
    config, gw, c, sup = setup(tmp_path, text, refresh_interval=0.5)
    try:
        assert len(list(c.chat.completions.create(model="main", messages=HI, max_tokens=2, stream=True))) == 4
        assert states(sup, "main", "side") == {"main": "running", "side": "stopped"}
        pieces: list[str] = []
        result: dict = {}

        def stream_main() -> None:
            try:
                for chunk in c.chat.completions.create(model="main", messages=STORY, max_tokens=40, stream=True):
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        result["finish"] = chunk.choices[0].finish_reason
            except Exception as exc:  # noqa: BLE001 - reported below
                result["error"] = exc
            finally:
                result["stream_end"] = time.monotonic()

        def ask_side() -> None:
            raw = c.chat.completions.with_raw_response.create(model="side", messages=HI, max_tokens=2)
            result["side_profile"] = raw.headers["x-llmctl-profile"]
            result["side_end"] = time.monotonic()

        t1 = threading.Thread(target=stream_main)
        t1.start()
        wait_for(lambda: pieces or "stream_end" in result, 60, "main's first piece")
        t2 = threading.Thread(target=ask_side)
        t2.start()
        pool = gw.gateway.pool
        wait_for(lambda: pool.records["side"].waiting, 10, "side's request to wait")
        seen = len(pieces)  # main goes on streaming while side waits
        wait_for(lambda: len(pieces) >= seen + 3 or "stream_end" in result, 10, "three more pieces")
        assert "stream_end" not in result and states(sup, "main")["main"] == "running"  # main still serves
        assert pool.records["main"].claims and pool.records["side"].waiting  # and takes no new requests meanwhile
        t1.join(120)
        t2.join(120)
        assert "error" not in result, result.get("error")  # the stream was not cut by the swap
        assert result["finish"] == "length" and len(pieces) == 40
        assert result["side_profile"] == "side" and result["side_end"] > result["stream_end"]
        assert states(sup, "main", "side") == {"main": "stopped", "side": "running"}
        assert metric(gw.url, 'llmctl_gateway_stops_total{profile="main",reason="swap"}') == 1
        # side idles for its idle_ttl: it stops and the primary comes back
        wait_for(lambda: states(sup, "main", "side") == {"main": "running", "side": "stopped"}, 20,
                 "the primary's return")
        # the gateway counts the start once its own wait sees it, a moment after the supervisor
        wait_for(lambda: metric(gw.url, 'llmctl_gateway_starts_total{profile="main",outcome="ok"}') == 2, 5,
                 "the gateway to count the primary's second start")
        assert metric(gw.url, 'llmctl_gateway_stops_total{profile="side",reason="idle"}') == 1
    finally:
        gw.stop()
    assert states(sup, "main", "side") == {"main": "stopped", "side": "stopped"}


def test_budget_evicts_the_least_recently_used_idle_server(tmp_path, smollm2, llama_server):
    from llmctl.gpu.estimate import estimate_profile

    # backend cuda with every layer offloaded: counted against the budget (the CPU build here
    # ignores the GPU flags, so the servers run all the same)
    gpu = {"backend": "cuda", "gpu_layers": 99}
    text = "profiles:\n" + "".join(f"  {n}: {small(smollm2, **gpu)}\n" for n in ("b1", "b2", "b3"))
    f = tmp_path / "probe.yaml"
    f.write_text(text)
    from llmctl import load_profiles

    each = estimate_profile(load_profiles([str(f)]).profiles["b1"]).total
    assert each > smollm2.stat().st_size  # weights + KV cache
    config, gw, c, sup = setup(tmp_path, text, vram_budget=int(each * 2.5), refresh_interval=0.5)
    try:
        for name in ("b1", "b2", "b1"):  # b2 is now the least recently used
            c.chat.completions.create(model=name, messages=HI, max_tokens=2)
        assert states(sup, "b1", "b2", "b3") == {"b1": "running", "b2": "running", "b3": "stopped"}
        c.chat.completions.create(model="b3", messages=HI, max_tokens=2)
        assert states(sup, "b1", "b2", "b3") == {"b1": "running", "b2": "stopped", "b3": "running"}
        assert metric(gw.url, 'llmctl_gateway_stops_total{profile="b2",reason="budget"}') == 1
        assert metric(gw.url, 'llmctl_gateway_stops_total{profile="b1",reason="budget"}') == 0
    finally:
        gw.stop()
    assert set(states(sup, "b1", "b2", "b3").values()) == {"stopped"}


def test_the_gateway_measures_what_its_scheduler_reads(tmp_path, smollm2, llama_server):
    """With a real llama-server: the start is timed, each request's arrival and length are
    kept (scheduler.Demand, serve_s), and the view the policy reads carries them. The gaps are
    at least the pauses between the requests; a request's length is at most what the client
    waited for it."""
    config, gw, c, sup = setup(tmp_path, f"profiles:\n  m: {small(smollm2)}\n", refresh_interval=0.5)
    try:
        longest = 0.0
        for _ in range(3):
            t0 = time.monotonic()
            c.chat.completions.create(model="m", messages=HI, max_tokens=2)
            longest = max(longest, time.monotonic() - t0)
            time.sleep(0.3)
        rec = gw.gateway.pool.records["m"]
        assert rec.load_s > 0  # the start, timed
        assert len(rec.demand.gaps) == 2 and all(g >= 0.3 for g in rec.demand.gaps), rec.demand
        assert 0 < rec.serve_s <= longest
        view = rec.view()
        assert view.urgency > 0 and view.serve_s == rec.serve_s and view.load_s == rec.load_s
    finally:
        gw.stop()
    assert states(sup, "m") == {"m": "stopped"}
