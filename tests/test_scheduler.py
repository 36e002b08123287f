"""The scheduler's judgement carried out by the pool (min_resident, collation, measured start
times), per-GPU placement (llmctl.gpu.placement), the scheduler simulator's policies on tiny
traces (the oracle checked against Belady's count), and the demand measure (urgency) with the
pool measuring it. The pool runs against test_gateway_pool's Recorder, a stand-in for the supervisor
(starts and stops take a few hundredths of a second): what is tested is the pool's timing, not
a server's."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmctl.gpu.placement import budget_by_gpu, budget_bytes, place

from .test_gateway_pool import P, Recorder, config, run, started


def test_no_thrash_inside_min_resident_and_the_requests_meanwhile_are_collated():
    """a is in demand and was loaded a moment ago: a request for b (only one fits) waits for a's
    min_resident instead of evicting it at once, and a request for a arriving meanwhile is
    served by the a already loaded, with no swap. Then b gets its turn (woken by the time, not
    by a change)."""

    async def go():
        control = Recorder(delay=0.02)
        pool = await started(config(P("a", min_resident=0.6), P("b", min_resident=0.6)), control, budget=150)
        for name in "ab":
            pool.records[name].estimate = 100
        (await pool.acquire("a")).release()
        rec = pool.records["a"]
        rec.rate, rec.rate_at = 5.0, time.monotonic()  # a busy model: another request is expected soon
        t0 = time.monotonic()
        want_b = asyncio.create_task(pool.acquire("b"))
        await asyncio.sleep(0.1)
        assert not want_b.done() and "stop a" not in control.events
        assert pool.records["b"].state.value == "stopped"
        (await pool.acquire("a")).release()  # collated: served by the loaded a, after b's claim
        assert control.count("start a") == 1
        lease_b = await want_b
        waited = time.monotonic() - t0
        assert 0.3 < waited < 5, waited
        assert control.events[-4:] == ["stop a", "down a", "start b", "up b"]
        lease_b.release()
        assert pool.records["b"].load_s > 0.015  # its start was timed (the stand-in takes 0.02 s)
        await pool.shutdown()

    run(go())


def test_a_server_loaded_but_rarely_asked_for_is_evicted_at_once():
    """The same world without demand for a: min_resident does not hold it (today's behaviour)."""

    async def go():
        control = Recorder(delay=0.02)
        pool = await started(config(P("a", min_resident=5), P("b", min_resident=5)), control, budget=150)
        for name in "ab":
            pool.records[name].estimate = 100
        (await pool.acquire("a")).release()
        t0 = time.monotonic()
        (await pool.acquire("b")).release()
        assert time.monotonic() - t0 < 2
        assert control.running == {"b"}
        await pool.shutdown()

    run(go())


def test_an_exclusive_group_swaps_as_written_unless_its_profile_sets_min_resident():
    from llmctl.profiles.schema import Group

    g = {"g": Group(name="g")}
    cfg = config(P("a", group="g"), P("b", group="g", min_resident=2), P("c"), groups=g)
    from llmctl.gateway.config import GatewayConfig
    from llmctl.gateway.pool import Pool

    pool = Pool(cfg, GatewayConfig(), Recorder())
    assert [pool.records[n].min_resident for n in "abc"] == [0.0, 2.0, cfg.defaults.min_resident]
    assert cfg.defaults.min_resident == 3.0


# -- placement --------------------------------------------------------------------------------
GIB = 1 << 30


@pytest.mark.parametrize(("need", "free", "split", "expected"), [
    pytest.param(10 * GIB, {"0": 70 * GIB, "1": 22 * GIB}, 1, ("1",), id="best fit: the GPU it fills most"),
    pytest.param(30 * GIB, {"0": 70 * GIB, "1": 22 * GIB}, 1, ("0",), id="only where it fits"),
    pytest.param(80 * GIB, {"0": 70 * GIB, "1": 22 * GIB}, 1, None, id="fits nowhere"),
    pytest.param(10 * GIB, {"1": 20 * GIB, "0": 20 * GIB}, 1, ("0",), id="a tie goes to the lower index"),
    pytest.param(40 * GIB, {"0": 30 * GIB, "1": 10 * GIB, "2": 25 * GIB}, 2, ("0", "2"),
                 id="split over two: the roomiest two, an even share each"),
    pytest.param(60 * GIB, {"0": 30 * GIB, "1": 10 * GIB, "2": 25 * GIB}, 2, None, id="split: a share too big"),
    pytest.param(1, {"0": 0}, 2, None, id="split over more GPUs than there are"),
])
def test_place(need, free, split, expected):
    assert place(need, free, split) == expected


def test_a_budget_per_gpu():
    assert budget_by_gpu({"0": "70GiB", "1": "22GiB"}) == {"0": 70 * GIB, "1": 22 * GIB}
    assert budget_bytes({"0": "70GiB", "1": "22GiB"}) == 92 * GIB
    assert budget_bytes("22GiB") == 22 * GIB and budget_by_gpu("22GiB") == {}
    assert budget_bytes(None) is None
    with pytest.raises(ValueError, match="GPU 1: 'lots' is not a size"):
        budget_by_gpu({"0": "1GiB", "1": "lots"})


def test_a_per_gpu_budget_is_read_from_a_profile_file(tmp_path):
    from llmctl import load_profiles

    f = tmp_path / "llmctl.yaml"
    f.write_text("profiles:\n  a: {model: m.gguf, port: 8001, min_resident: 1.5}\n"
                 "defaults: {vram_budget: {0: 70GiB, 1: 22GiB}, min_resident: 4}\n")
    cfg = load_profiles([str(f)])
    assert cfg.defaults.vram_budget == {"0": "70GiB", "1": "22GiB"}
    assert cfg.defaults.min_resident == 4 and cfg.profiles["a"].min_resident == 1.5


class PlacingRecorder(Recorder):
    """The Recorder, also recording the GPUs each start was placed on."""

    def __init__(self) -> None:
        super().__init__(delay=0.02)
        self.placed: dict[str, tuple[str, ...]] = {}

    def start(self, name: str, devices: tuple[str, ...] = ()) -> str:
        self.placed[name] = devices
        return super().start(name)


def test_the_gateway_places_unpinned_profiles_per_gpu_and_keeps_pinned_ones():
    """defaults.vram_budget as a map: the pool hands the chosen GPU to the start; a pinned
    profile is started as its profile says (no placement passed)."""
    from llmctl.profiles.schema import Defaults

    async def go():
        control = PlacingRecorder()
        cfg = config(P("big"), P("small"), P("pinned", devices=["0"]))
        cfg.defaults = Defaults(vram_budget={"0": "300", "1": "150"})
        pool = await started(cfg, control, budget=450)
        for name, size in (("big", 200), ("small", 100), ("pinned", 150)):
            pool.records[name].estimate = size
        (await pool.acquire("small")).release()  # best fit: GPU 1 (150) before GPU 0 (300)
        (await pool.acquire("big")).release()  # only GPU 0 holds it
        (await pool.acquire("pinned")).release()  # 200 + 150 > 300 on GPU 0: big goes, pinned stays on 0
        assert control.placed == {"small": ("1",), "big": ("0",), "pinned": ()}
        assert control.running == {"small", "pinned"}
        assert pool.records["big"].placed == ("0",)
        await pool.shutdown()

    run(go())


def test_a_placed_server_gets_its_gpu_through_the_visible_device_variable(tmp_path):
    from llmctl.engines.discovery import EngineBinary
    from llmctl.engines.llama_server import build
    from llmctl.gateway.control import placed_on
    from llmctl.paths import Paths

    prof = P("a", backend="cuda")
    placed = placed_on(prof, ("1",))
    cmd = build(placed, EngineBinary("llama-server", "test"), tmp_path / "m.gguf", Paths.from_env())
    assert cmd.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert prof.devices == [] and placed.url == prof.url  # the profile itself is not changed


# -- the simulator (llmctl.gateway.simulate: the real decide() on a fake clock) ---------------
def tiny(models: dict[str, tuple[float, float]], requests: list[tuple[float, str]]):
    from llmctl.gateway.simulate import trace_from

    return trace_from({"models": {n: {"gb": gb, "load_s": s} for n, (gb, s) in models.items()},
                       "requests": [[t, m, 1.0] for t, m in requests]})


def test_the_simulator_replays_a_swap_under_each_policy():
    from llmctl.gateway.simulate import GB, simulate

    trace = tiny({"a": (6, 2), "b": (6, 2)}, [(0, "a"), (20, "b"), (40, "a"), (60, "b")])
    for policy in ("groups", "lru", "scheduler"):
        r = simulate(trace, {"0": 10 * GB}, policy)
        assert (r.loads, r.swaps, len(r.waits), r.refused) == (4, 3, 4, 0), policy
        assert all(1.6 <= w <= 2.5 + 0.5 for w in r.waits), (policy, r.waits)  # a load (+ a stop) each
    both = simulate(trace, {"0": 12 * GB}, "lru")
    assert (both.loads, both.swaps) == (2, 0)  # both fit: loaded once each
    assert simulate(trace, {"0": 12 * GB}, "groups").swaps == 3  # one group per GPU swaps anyway


def test_the_scheduler_keeps_the_model_expensive_to_reload_where_lru_evicts_it():
    """The primary (20 s to load, asked for three times) was used less recently than a
    specialist (2 s): LRU stops the primary for the second specialist and the next request for
    it waits a reload; the scheduler stops the cheap specialist instead."""
    from llmctl.gateway.simulate import GB, simulate

    trace = tiny({"primary": (10, 20), "s1": (8, 2), "s2": (8, 2)},
                 [(0, "primary"), (25, "primary"), (30, "primary"), (40, "s1"), (50, "s2"), (60, "primary")])
    lru, sched = (simulate(trace, {"0": 20 * GB}, p) for p in ("lru", "scheduler"))
    assert (lru.loads, lru.swaps) == (4, 2) and (sched.loads, sched.swaps) == (3, 1)
    assert lru.waits[-1] > 15 and sched.waits[-1] == 0  # the primary at 60 s: a reload, or none
    assert sched.load_time < lru.load_time - 10


def test_the_simulator_places_per_gpu_and_refuses_an_unknown_policy():
    from llmctl.gateway.simulate import GB, deal, simulate

    trace = tiny({"a": (20, 2), "b": (20, 2)}, [(0, "a"), (1, "b"), (30, "a"), (31, "b")])
    gpus = {"0": 24 * GB, "1": 24 * GB}
    assert deal(trace.models, gpus) == {"a": "0", "b": "1"}
    assert simulate(trace, gpus, "scheduler").swaps == 0  # one on each GPU
    with pytest.raises(ValueError, match="one of groups, lru, scheduler, oracle"):
        simulate(trace, gpus, "fifo")


def _belady(seq: list[str], slots: int) -> int:
    """Evictions by Belady's rule on a plain sequence (no clock): the cached item asked for
    furthest in the future goes."""
    cache: set[str] = set()
    evicted = 0
    for i, x in enumerate(seq):
        if x not in cache:
            if len(cache) == slots:
                ahead = {c: next((j for j in range(i + 1, len(seq)) if seq[j] == c), len(seq)) for c in cache}
                cache.remove(max(cache, key=ahead.__getitem__))
                evicted += 1
            cache.add(x)
    return evicted


def test_cyclic_demand_the_scheduler_learns_it_and_the_oracle_is_beladys_rule():
    """Four models asked for in turn, room for three: least recently used stops the very model
    asked for next, every time; the scheduler, once it has seen the gaps, stops the one asked for
    last (expected last); the oracle, reading the trace's future, stops exactly what Belady's
    rule stops (its swaps equal the plain-sequence count)."""
    from llmctl.gateway.simulate import GB, simulate

    seq = ["abcd"[i % 4] for i in range(32)]
    trace = tiny({m: (6, 2) for m in "abcd"}, [(10.0 * i, m) for i, m in enumerate(seq)])
    lru, sched, oracle = (simulate(trace, {"0": 18 * GB}, p) for p in ("lru", "scheduler", "oracle"))
    assert lru.swaps == len(seq) - 3  # every request after the first three evicts
    assert oracle.swaps == _belady(seq, 3) == 10
    assert oracle.swaps <= sched.swaps < lru.swaps / 2, (lru.swaps, sched.swaps, oracle.swaps)


def test_the_oracle_keeps_the_model_asked_for_next_where_no_online_rule_can_know():
    """Three models in an irregular order, room for two: the oracle stops the one asked for
    furthest ahead (Belady's count), fewer swaps than least recently used; the scheduler,
    seeing no pattern, does no better than the oracle."""
    from llmctl.gateway.simulate import GB, simulate

    order = "xyzzxyxzyyzxzyxxzy"
    trace = tiny({m: (8, 2) for m in "xyz"}, [(20.0 * i, m) for i, m in enumerate(order)])
    lru, sched, oracle = (simulate(trace, {"0": 16 * GB}, p) for p in ("lru", "scheduler", "oracle"))
    assert oracle.swaps == _belady(list(order), 2) == 6
    assert oracle.swaps < lru.swaps and oracle.swaps <= sched.swaps


# -- what the scheduler measures (llmctl.gateway.scheduler.Demand) and the pool measuring it ---
def _seen(times) -> object:
    from llmctl.gateway.scheduler import Demand

    d = Demand()
    for t in times:
        d = d.asked(float(t))
    return d


def test_urgency_of_each_kind_of_demand():
    from llmctl.gateway.scheduler import GAPS, PRIOR, SOON, Demand

    assert Demand().urgency(100.0) == 0.0  # never asked for
    once = _seen([90])
    assert once.gaps == () and once.urgency(100.0) == 1 / PRIOR  # no gap seen: PRIOR
    assert once.urgency(90 + 2 * PRIOR) == pytest.approx(1 / (2 * PRIOR))  # then as long again as it was quiet
    assert _seen([0, 3]).urgency(5.5) == pytest.approx((1 / SOON + 1 / PRIOR) / 2)  # 0.5 s left: SOON
    assert len(_seen(range(100)).gaps) == GAPS  # the last GAPS gaps are kept

    # cyclic: six models asked for in turn every 2 s; just after the last (5) asked: the order
    # of their next requests, 0 first; least recently used would stop 0
    cycle = {i: _seen([2 * i + 12 * k for k in range(10)]) for i in range(6)}
    now = 2 * 5 + 12 * 9 + 1
    assert sorted(cycle, key=lambda i: cycle[i].urgency(now)) == [5, 4, 3, 2, 1, 0]

    # bursts of three requests 2 s apart every 100 s: kept inside a burst, not once it is over
    bursts = _seen([100 * b + 2 * k for b in range(5) for k in range(3)])
    last = 404
    assert bursts.urgency(last + 1) > 10 * bursts.urgency(last + 10)

    # steady demand: ten times the requests, about ten times the urgency
    often, rarely = _seen([3 * k for k in range(30)]), _seen([30 * k for k in range(30)])
    ratio = often.urgency(3 * 29 + 1.5) / rarely.urgency(30 * 29 + 15)
    assert 5 < ratio < 20, ratio


def test_the_pool_measures_what_the_scheduler_reads():
    """Arrivals (each request that may start the server, and a fallback once it is served),
    the length of each request, and the start time, on the pool's clock: the view the policy
    reads carries the urgency and the request length."""
    from llmctl.gateway.scheduler import PRIOR

    async def go():
        control = Recorder(delay=0.02)
        pool = await started(config(P("a")), control)
        rec = pool.records["a"]
        for hold in (0.05, 0.1):
            lease = await pool.acquire("a")
            await asyncio.sleep(hold)
            lease.release()
        assert rec.load_s > 0.015  # the stand-in's start takes 0.02 s
        assert len(rec.demand.gaps) == 1 and rec.demand.gaps[0] >= 0.05
        assert 0.05 <= rec.serve_s < 0.2  # learned from 0.05 s then 0.1 s
        (await pool.acquire("a", start=False)).release()  # a fallback served: counted too
        assert len(rec.demand.gaps) == 2
        view = rec.view()
        assert view.serve_s == rec.serve_s and 1 / PRIOR < view.urgency <= 1.0
        await pool.shutdown()

    run(go())


# -- plan --together ----------------------------------------------------------------------------
def test_together_lists_the_sets_per_gpu_and_what_each_request_evicts():
    from llmctl.gateway.together import ALL, fit_sets, together

    assert fit_sets({"a": 10, "b": 10, "c": 15}, 24) == [("a", "b"), ("c",)]
    t = together({"a": 10, "b": 10, "c": 15, "d": 5}, {"0": 24, "1": 16})
    assert t.sets["1"] == [("a", "d"), ("b", "d"), ("c",)]
    assert t.loaded == {"b": ("0",), "c": ("1",), "d": ("0",)}  # c (15) took GPU 1 from a
    assert t.evicts == {"a": ("c",), "b": (), "c": (), "d": ()}
    one = together({"a": 10, "b": 10, "c": 15}, {ALL: 24})
    assert one.loaded == {"c": (ALL,)} and one.evicts["a"] == ("c",)
    assert together({"huge": 30}, {"0": 24}).evicts == {"huge": None}


def test_plan_together_from_the_command_line(tmp_path, smollm2, ports):
    """Real GGUF headers give the estimates; a per-GPU budget sized so two of the three fit on
    GPU 0 and one on GPU 1."""
    import json

    from llmctl import load_profiles
    from llmctl.gpu.estimate import estimate_profile

    from .util import cli

    f = tmp_path / "t.yaml"
    gpu = "backend: cuda, gpu_layers: 99, ctx_size: 512"
    f.write_text("profiles:\n" + "".join(f"  {n}: {{model: {smollm2}, port: {ports()}, {gpu}}}\n" for n in "abc"))
    each = estimate_profile(load_profiles([str(f)]).profiles["a"]).total
    f.write_text(f.read_text() + f"defaults: {{vram_budget: {{0: {int(each * 2.5)}, 1: {int(each * 1.5)}}}}}\n")
    env = {"LLMCTL_PROFILES": str(f)}
    r = cli("plan", "a", "b", "c", "--together", "--json", env=env)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["together"]
    assert t["sets"] == {"0": [["a", "b"], ["a", "c"], ["b", "c"]], "1": [["a"], ["b"], ["c"]]}
    assert t["loaded"] == {"a": ["1"], "b": ["0"], "c": ["0"]} and t["evicts"] == {"a": [], "b": [], "c": []}
    r = cli("plan", "a", "b", "c", "--together", env=env)
    assert "fit together on GPU 0: a, b; a, c; b, c" in r.stdout and "a: loaded on 1" in r.stdout


# -- estimates that learn (llmctl.gpu.learned) ---------------------------------------------------
def test_a_measured_vram_replaces_the_estimate_and_plan_shows_both(tmp_path, smollm2, ports):
    """What status saw a running server take (given here as status hands it over: name, state,
    MiB; the GPU tools that measure it are not on this machine) is used in place of the GGUF
    estimate by plan, for that profile and model only."""
    import json

    from llmctl import load_profiles
    from llmctl.gpu.learned import learn, lookup
    from llmctl.paths import Paths

    from .util import cli

    f = tmp_path / "l.yaml"
    f.write_text(f"profiles:\n  a: {{model: {smollm2}, port: {ports()}, backend: cuda, gpu_layers: 99, "
                 f"ctx_size: 512}}\n  b: {{model: {smollm2}, port: {ports()}}}\n")
    cfg, paths = load_profiles([str(f)]), Paths.from_env()
    learn(paths, cfg.profiles, [("a", "starting", 500), ("b", "running", 500)])  # not running / CPU: nothing
    assert lookup(paths, cfg.profiles["a"]) is None and lookup(paths, cfg.profiles["b"]) is None
    learn(paths, cfg.profiles, [("a", "running", 220)])
    learn(paths, cfg.profiles, [("a", "running", 200)])  # the largest seen is kept
    assert lookup(paths, cfg.profiles["a"]) == 220 << 20
    env = {"LLMCTL_PROFILES": str(f)}
    r = cli("plan", "a", "--json", env=env)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    [e] = p["profiles"]
    assert e["method"] == "measured" and e["total"] == 220 << 20 and p["need"] == 220 << 20
    assert 0 < p["estimated"]["a"] < 220 << 20
    r = cli("plan", "a", env=env)
    assert "measured 220.0 MiB when it ran (estimate" in r.stdout + r.stderr
    f.write_text(f.read_text().replace("ctx_size: 512", "ctx_size: 1024"))  # another context: estimated afresh
    p = json.loads(cli("plan", "a", "--json", env=env).stdout)
    assert p["profiles"][0]["method"] == "gguf" and p["estimated"] == {}


@pytest.mark.engine
def test_up_places_unpinned_profiles_per_gpu_through_the_visible_device_variable(tmp_path, smollm2, ports,
                                                                                llama_server):
    """`up` under a per-GPU budget: each unpinned cuda profile is started with the GPU where it
    fits best as CUDA_VISIBLE_DEVICES (the CPU build here ignores it and the GPU flags, so the
    servers run all the same); a pinned one keeps its devices."""
    from llmctl import load_profiles
    from llmctl.engines.spec import LaunchSpec
    from llmctl.gpu.estimate import estimate_profile
    from llmctl.paths import Paths

    from .util import cli

    f = tmp_path / "u.yaml"
    gpu = "backend: cuda, gpu_layers: 99, ctx_size: 512, threads: 1"
    f.write_text("profiles:\n" + "".join(f"  {n}: {{model: {smollm2}, port: {ports()}, {gpu}}}\n" for n in "ab")
                 + f"  pinned: {{model: {smollm2}, port: {ports()}, {gpu}, devices: ['1']}}\n")
    each = estimate_profile(load_profiles([str(f)]).profiles["a"]).total
    f.write_text(f.read_text() + f"defaults: {{vram_budget: {{0: {int(each * 1.5)}, 1: {int(each * 3.5)}}}}}\n")
    env = {"LLMCTL_PROFILES": str(f)}
    try:
        r = cli("up", "a", "b", "pinned", env=env)
        assert r.returncode == 0, r.stderr
        paths = Paths.from_env()
        seen = {n: LaunchSpec.read(paths.spec_file(n)).env.get("CUDA_VISIBLE_DEVICES") for n in ("a", "b", "pinned")}
        assert seen == {"a": "0", "b": "1", "pinned": "1"}  # a fills GPU 0 best; b fits only on 1
    finally:
        assert cli("down", env=env).returncode == 0
