"""The gateway's state owner (llmctl.gateway.pool), driven fast: the supervisor calls go to a
stand-in that records them (the same three methods as ServerControl). The real-engine tests in
test_gateway_engine.py and test_gateway_swap.py run the same behaviours end to end."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from llmctl.errors import StartFailed
from llmctl.gateway.config import GatewayConfig
from llmctl.gateway.control import Observed
from llmctl.gateway.errors import Busy, NotRunning, Unavailable
from llmctl.gateway.pool import Pool
from llmctl.profiles.schema import Config, Group, Profile


class Recorder:
    """Start/stop take ``delay`` seconds (in the pool's worker threads) and are logged in order."""

    def __init__(self, delay: float = 0.05, fail: set[str] | None = None) -> None:
        self.delay, self.fail = delay, fail or set()
        self.events: list[str] = []
        self.running: set[str] = set()
        self.external: dict[str, str] = {}  #: states set "outside the gateway"
        self.lock = threading.Lock()

    def start(self, name: str) -> str:
        with self.lock:
            self.events.append(f"start {name}")
        time.sleep(self.delay)
        if name in self.fail:
            raise StartFailed(f"{name} failed to start: exited with code 1", name=name)
        with self.lock:
            self.running.add(name)
            self.events.append(f"up {name}")
        return "started"

    def stop(self, name: str) -> None:
        with self.lock:
            self.events.append(f"stop {name}")
        time.sleep(self.delay / 2)
        with self.lock:
            self.running.discard(name)
            self.events.append(f"down {name}")

    def status(self, names: list[str]) -> list[Observed]:
        with self.lock:
            return [Observed(n, self.external.get(n, "running" if n in self.running else "stopped")) for n in names]

    def count(self, event: str) -> int:
        return self.events.count(event)


def config(*profiles: Profile, groups: dict[str, Group] | None = None) -> Config:
    return Config(profiles={p.name: p for p in profiles}, groups=groups or {})


def P(name: str, **kw) -> Profile:
    return Profile(name=name, model="m.gguf", port=kw.pop("port", 1), **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(cfg: Config, control: Recorder, budget: int | None = None, **gw) -> Pool:
    gw.setdefault("refresh_interval", 0)
    pool = Pool(cfg, GatewayConfig(**gw), control, budget=budget)
    await pool.start()
    return pool


def test_one_start_serves_every_waiting_request():
    async def go():
        control = Recorder(delay=0.3)
        pool = await started(config(P("a")), control)
        leases = await asyncio.gather(*(pool.acquire("a") for _ in range(5)))
        assert control.count("start a") == 1
        assert pool.records["a"].inflight == 5 and pool.records["a"].state == "running"
        for lease in leases:
            lease.release()
            lease.release()  # idempotent
        assert pool.records["a"].inflight == 0
        await pool.shutdown("started")
        assert control.events[-2:] == ["stop a", "down a"]

    run(go())


def test_failed_start_answers_every_waiter_then_is_retried_after_a_pause():
    async def go():
        control = Recorder(delay=0.2, fail={"a"})
        pool = await started(config(P("a")), control, retry_failed_after=0.5)
        results = await asyncio.gather(*(pool.acquire("a") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, Unavailable) and "exited with code 1" in r.message for r in results)
        assert control.count("start a") == 1
        with pytest.raises(Unavailable):  # within the pause: no new attempt
            await pool.acquire("a")
        assert control.count("start a") == 1
        await asyncio.sleep(0.6)
        control.fail.clear()
        lease = await pool.acquire("a")
        assert control.count("start a") == 2
        lease.release()
        await pool.shutdown()

    run(go())


def test_concurrency_limit_and_fallback_only_when_running():
    async def go():
        control = Recorder()
        pool = await started(config(P("a"), P("b")), control, max_concurrent=2)
        held = [await pool.acquire("a"), await pool.acquire("a")]
        with pytest.raises(Busy):
            await pool.acquire("a")
        with pytest.raises(NotRunning):  # an overflow fallback is not started for it
            await pool.acquire("b", start=False)
        assert control.count("start b") == 0
        held.pop().release()
        (await pool.acquire("a")).release()
        for lease in held:
            lease.release()
        await pool.shutdown()

    run(go())


def test_a_profiles_own_limit_wins_over_serves():
    async def go():
        control = Recorder()
        pool = await started(config(P("heavy", max_concurrent=1), P("light")), control, max_concurrent=3)
        held = [await pool.acquire("heavy")]
        with pytest.raises(Busy, match="max_concurrent: 1 in its profile"):
            await pool.acquire("heavy")
        held += [await pool.acquire("light") for _ in range(3)]
        with pytest.raises(Busy, match="serve --max-concurrent 3"):
            await pool.acquire("light")
        for lease in held:
            lease.release()
        await pool.shutdown()

    run(go())


def test_swap_waits_for_requests_in_flight_and_is_not_starved():
    g = {"g": Group(name="g", exclusive=True)}

    async def go():
        control = Recorder()
        pool = await started(config(P("a", group="g"), P("b", group="g"), groups=g), control)
        first_a = await pool.acquire("a")
        want_b = asyncio.create_task(pool.acquire("b"))
        await asyncio.sleep(0.2)
        assert not want_b.done() and "stop a" not in control.events  # a still serves a request
        late_a = asyncio.create_task(pool.acquire("a"))  # arrives after b's claim: waits its turn
        await asyncio.sleep(0.2)
        assert not late_a.done() and pool.records["a"].inflight == 1
        first_a.release()
        lease_b = await want_b
        assert control.events.index("down a") < control.events.index("start b")
        assert "a" not in control.running and "b" in control.running
        assert not late_a.done()
        lease_b.release()
        lease_a = await late_a  # swaps back once b is idle
        assert control.events[-4:] == ["stop b", "down b", "start a", "up a"]
        lease_a.release()
        await pool.shutdown()

    run(go())


def test_idle_ttl_racing_a_request_never_deadlocks():
    """The request arrives while the TTL stop runs (llama-swap #946): it waits for the stop,
    then starts the server again."""

    async def go():
        control = Recorder(delay=0.4)
        pool = await started(config(P("a", idle_ttl=0.1)), control)
        (await pool.acquire("a")).release()
        for _ in range(100):
            if pool.records["a"].state == "stopping":
                break
            await asyncio.sleep(0.01)
        assert pool.records["a"].state == "stopping"
        lease = await pool.acquire("a")
        assert control.events == ["start a", "up a", "stop a", "down a", "start a", "up a"]
        assert pool.records["a"].state == "running"
        await asyncio.sleep(0.3)  # held: the TTL does not apply while a request is in flight
        assert pool.records["a"].state == "running"
        lease.release()
        for _ in range(500):  # TTL, reaper tick, the stop itself: 0.4 s or so, longer on a busy machine
            if pool.records["a"].state == "stopped":
                break
            await asyncio.sleep(0.01)
        assert pool.records["a"].state == "stopped"
        await pool.shutdown()

    run(go())


def test_primary_comes_back_when_the_others_go_idle():
    g = {"g": Group(name="g", exclusive=True, primary="main")}

    async def go():
        control = Recorder()
        cfg = config(P("main", group="g"), P("side", group="g"), groups=g)
        pool = await started(cfg, control, primary_return=0.2)  # side has no idle_ttl: primary_return
        (await pool.acquire("main")).release()
        (await pool.acquire("side")).release()
        assert control.running == {"side"}
        for _ in range(200):
            if pool.records["main"].state == "running":
                break
            await asyncio.sleep(0.02)
        assert control.running == {"main"}
        assert control.events[-4:] == ["stop side", "down side", "start main", "up main"]
        assert pool.records["main"].ours
        await pool.shutdown()

    run(go())


def test_budget_evicts_the_least_recently_used_idle_server():
    async def go():
        control = Recorder()
        pool = await started(config(P("a"), P("b"), P("c")), control, budget=250)
        for name in "abc":
            pool.records[name].estimate = 100  # two fit, three do not
        (await pool.acquire("a")).release()
        busy_b = await pool.acquire("b")
        (await pool.acquire("c")).release()  # a is idle, b is busy: a goes
        assert control.running == {"b", "c"} and "stop b" not in control.events
        busy_b.release()  # b's last use is now later than c's
        (await pool.acquire("a")).release()  # both idle: the least recently used (c) goes
        assert control.running == {"a", "b"}
        assert control.events[-4:] == ["stop c", "down c", "start a", "up a"]
        await pool.shutdown()

    run(go())


def test_a_server_bigger_than_the_budget_is_refused_at_once():
    async def go():
        control = Recorder()
        pool = await started(config(P("a")), control, budget=100)
        pool.records["a"].estimate = 101
        with pytest.raises(Unavailable, match="more than the whole VRAM budget"):
            await pool.acquire("a")
        assert control.events == []
        await pool.shutdown()

    run(go())


def test_waiting_is_bounded():
    async def go():
        control = Recorder(delay=1.0)
        pool = await started(config(P("a")), control)
        with pytest.raises(Unavailable, match="waited"):
            await pool.acquire("a", deadline=time.monotonic() + 0.2)
        lease = await pool.acquire("a")  # the start went on and serves the next request
        assert control.count("start a") == 1
        lease.release()
        await pool.shutdown()

    run(go())


def test_refresh_follows_the_supervisor_and_shutdown_stops_only_its_own():
    async def go():
        control = Recorder()
        control.running.add("ext")  # started with `llmctl up` before the gateway
        pool = await started(config(P("ext"), P("own")), control)
        assert pool.records["ext"].state == "running" and not pool.records["ext"].ours
        (await pool.acquire("own")).release()
        control.external["own"] = "backoff"  # its keeper is restarting it
        await pool.refresh()
        assert pool.records["own"].state == "recovering"
        waiter = asyncio.create_task(pool.acquire("own"))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        control.external.pop("own")
        await pool.refresh()
        (await waiter).release()
        stopped = await pool.shutdown("started")
        assert stopped == ["own"] and "ext" in control.running

    run(go())
