"""The gateway's rules as a specification (llmctl.gateway.policy and states): each case is a
world (the servers as plain data, the groups, the budget, the clock), a request, and what the
gateway does with it. No event loop, no process: the pool carries these decisions out, and
test_gateway_pool.py / test_gateway_swap.py run the same rules end to end."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from llmctl.gateway.config import GatewayConfig
from llmctl.gateway.policy import (
    Admit,
    Group,
    Reject,
    Request,
    Server,
    Start,
    Wait,
    World,
    decide,
    idle_expired,
    idle_ttl,
    primary_to_restore,
    stop_on_exit,
)
from llmctl.gateway.pool import Pool
from llmctl.gateway.scheduler import resident
from llmctl.gateway.states import FROM_SUPERVISOR, TRANSITIONS, GatewayState, IllegalTransition, check_transition
from llmctl.profiles.schema import Config, Profile
from llmctl.supervise.states import State

STOPPED, STARTING, RUNNING, STOPPING, RECOVERING, FAILED = GatewayState
NOW = 100.0


def world(*servers: Server, groups: dict[str, Group] | None = None, budget: int | None = None,
          closing: bool = False, gpus: dict[str, int] | None = None) -> World:
    if gpus and budget is None:
        budget = sum(gpus.values())
    return World({s.name: s for s in servers}, groups or {}, budget, NOW, retry_failed_after=2.0, closing=closing,
                 gpus=gpus or {})


def on(gpu: str, name: str, **kw) -> Server:
    """A running server the gateway placed on ``gpu``."""
    return srv(name, RUNNING, devices=(gpu,), **kw)


def duo(**kw) -> dict[str, Group]:
    """One group of "a" and "b" (exclusive unless said otherwise)."""
    return {"g": Group(("a", "b"), **kw)}


def srv(name: str, state: GatewayState = STOPPED, **kw) -> Server:
    kw.setdefault("limit", 2)
    return Server(name, state, **kw)


def a(state: GatewayState = STOPPED, **kw) -> Server:
    return srv("a", state, group="g", **kw)


def b(state: GatewayState = RUNNING, **kw) -> Server:
    return srv("b", state, group="g", **kw)


ASK_A = Request("a", ticket=5)
HOT = {"min_resident": 3, "rate": 1, "urgency": 1}  #: kept 3 s once loaded; asked for once a second (in demand)

CASES = [
    # -- admission ------------------------------------------------------------------------
    pytest.param(world(a(RUNNING, inflight=1)), ASK_A, Admit(), id="running with room: admitted"),
    pytest.param(world(a(RUNNING, inflight=2)), ASK_A, Reject("busy"), id="running at max_concurrent: 429"),
    pytest.param(world(a(RUNNING), closing=True), ASK_A, Reject("closing"), id="shutting down: refused"),
    pytest.param(world(a(RUNNING, claims=frozenset({3}))), ASK_A, Wait(),
                 id="claimed for a swap by an earlier request: a later one waits its turn"),
    pytest.param(world(a(RUNNING, claims=frozenset({7}))), ASK_A, Admit(),
                 id="claimed by a later request: an earlier one is still served"),
    pytest.param(world(a(STOPPED)), Request("a", 5, may_start=False), Reject("not-running"),
                 id="a fallback that may not start it: refused when not running"),
    # -- another start or stop in flight: wait for it -----------------------------------
    pytest.param(world(a(STARTING)), ASK_A, Wait(), id="starting: waits for that start"),
    pytest.param(world(a(STOPPING)), ASK_A, Wait(), id="stopping: waits, then starts it again"),
    pytest.param(world(a(RECOVERING)), ASK_A, Wait(), id="its keeper restarts it: waits"),
    pytest.param(world(a(STOPPED)), ASK_A, Start(), id="stopped: started"),
    # -- failed starts --------------------------------------------------------------------
    pytest.param(world(a(FAILED, failed_at=NOW - 1)), ASK_A, Reject("failed"),
                 id="failed a moment ago: 503 until retry_failed_after"),
    pytest.param(world(a(FAILED, failed_at=NOW - 3)), ASK_A, Start(), id="failed long enough ago: retried"),
    pytest.param(world(a(FAILED, failed_attempt=3)), Request("a", 5, attempt=3), Reject("failed"),
                 id="the start this request waited on failed: 503, not another start"),
    # -- exclusive groups -----------------------------------------------------------------
    pytest.param(world(a(), b(), groups=duo()), ASK_A, Start((("b", "swap"),)),
                 id="exclusive group: the idle member is swapped out first"),
    pytest.param(world(a(), b(inflight=1), groups=duo()), ASK_A, Wait(claim=("b",)),
                 id="exclusive group: a member serving a request is claimed, never stopped"),
    pytest.param(world(a(), b(waiting=frozenset({2})), groups=duo()), ASK_A, Wait(claim=("b",)),
                 id="exclusive group: an older request waiting for the member keeps it"),
    pytest.param(world(a(), b(claims=frozenset({2})), groups=duo()), ASK_A, Wait(claim=("b",)),
                 id="exclusive group: an older claim on the member comes first"),
    pytest.param(world(a(), b(STARTING), groups=duo()), ASK_A, Wait(claim=("b",)),
                 id="exclusive group: a member still starting is claimed and waited for"),
    pytest.param(world(a(), b(STOPPING), groups=duo()), ASK_A, Wait(),
                 id="exclusive group: a member already stopping is waited for, not claimed"),
    pytest.param(world(a(), b(STOPPED), groups=duo()), ASK_A, Start(), id="exclusive group: nothing else live"),
    pytest.param(world(a(), b(), groups=duo(exclusive=False)), ASK_A, Start(),
                 id="a group that is not exclusive: members run side by side"),
    pytest.param(world(a(), b(), groups=duo(primary="b")), ASK_A, Start((("b", "swap"),)),
                 id="group with a primary: asking for the other member swaps the primary out"),
    # -- the VRAM budget ------------------------------------------------------------------
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100), budget=200), ASK_A, Start(),
                 id="budget: fits beside what runs"),
    pytest.param(world(srv("a", estimate=201), budget=200), ASK_A, Reject("too-big"),
                 id="budget: more than the whole budget is refused"),
    pytest.param(world(srv("a", estimate=0), srv("b", RUNNING, estimate=200), budget=200), ASK_A, Start(),
                 id="budget: an unknown estimate is never held back"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, last_used=50),
                       srv("c", RUNNING, estimate=100, last_used=80), budget=250), ASK_A, Start((("b", "budget"),)),
                 id="budget: the least recently used idle server goes"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, last_used=10, inflight=1),
                       srv("c", RUNNING, estimate=100, last_used=80), budget=250), ASK_A, Start((("c", "budget"),)),
                 id="budget: an idle server goes before a busy one, however recently used"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=200, inflight=1), budget=250), ASK_A,
                 Wait(claim=("b",)), id="budget: a server serving a request is never stopped: claimed, waited for"),
    pytest.param(world(srv("a", estimate=200), srv("b", RUNNING, estimate=100, last_used=10),
                       srv("c", RUNNING, estimate=100, last_used=20), budget=250), ASK_A,
                 Start((("b", "budget"), ("c", "budget"))), id="budget: as many as it takes, oldest first"),
    pytest.param(world(srv("a", estimate=100), srv("b", STOPPING, estimate=100),
                       srv("c", RUNNING, estimate=100), budget=250), ASK_A, Wait(),
                 id="budget: a server already stopping counts first (waited for, not claimed)"),
    pytest.param(world(a(estimate=200), b(estimate=200), srv("c", RUNNING, estimate=100), groups=duo(), budget=300),
                 ASK_A, Start((("b", "swap"),)), id="budget: the swapped-out member's memory counts"),
    # -- judgement: reload cost, minimum residency, collation (llmctl.gateway.scheduler) -----
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, last_used=50, load_s=30, urgency=0.1),
                       srv("c", RUNNING, estimate=100, last_used=80, load_s=2, urgency=0.05), budget=250), ASK_A,
                 Start((("c", "budget"),)),
                 id="cost: the server cheaper to reload goes, though used more recently (LRU would stop b)"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, last_used=50, load_s=5, urgency=0.1),
                       srv("c", RUNNING, estimate=100, last_used=80, load_s=5, urgency=0.1), budget=250), ASK_A,
                 Start((("b", "budget"),)), id="cost: equal costs fall back to least recently used"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=50, load_s=1, urgency=0.01),
                       srv("c", RUNNING, estimate=200, load_s=9, urgency=0.1), budget=250), ASK_A,
                 Start((("c", "budget"),)), id="cost: a cheap victim that turns out not to be needed is kept"),
    pytest.param(world(srv("a", estimate=200), srv("b", RUNNING, estimate=100, load_s=2, urgency=0.1),
                       srv("c", RUNNING, estimate=100, load_s=2, urgency=0.1),
                       srv("d", RUNNING, estimate=200, load_s=5, urgency=0.1), budget=400), ASK_A,
                 Start((("d", "budget"),)), id="cost: one server rather than two where it costs not much more"),
    pytest.param(world(srv("a", estimate=200), srv("b", RUNNING, estimate=100, load_s=2, urgency=0.1),
                       srv("c", RUNNING, estimate=100, load_s=2, urgency=0.1),
                       srv("d", RUNNING, estimate=200, load_s=5, urgency=1), budget=400), ASK_A,
                 Start((("b", "budget"), ("c", "budget"))),
                 id="cost: two servers where the one would cost more than twice as much"),
    pytest.param(world(srv("a", estimate=100, load_s=5),
                       srv("b", RUNNING, estimate=100, inflight=1, serve_s=1, load_s=5, urgency=0.01),
                       srv("c", RUNNING, estimate=100, load_s=5, urgency=1), budget=250), ASK_A,
                 Wait(claim=("b",)), id="worth waiting: for a busy server whose requests take 1 s, rather than "
                                        "stopping one about to be asked for"),
    pytest.param(world(srv("a", estimate=100, load_s=5),
                       srv("b", RUNNING, estimate=100, inflight=1, serve_s=30, load_s=5, urgency=0.01),
                       srv("c", RUNNING, estimate=100, load_s=5, urgency=1), budget=250), ASK_A,
                 Start((("c", "budget"),)), id="worth waiting: not for requests longer than the start itself"),
    pytest.param(world(srv("a", estimate=100, load_s=5),
                       srv("b", RUNNING, estimate=100, inflight=1, load_s=5, urgency=0.01),
                       srv("c", RUNNING, estimate=100, load_s=5, urgency=1), budget=250), ASK_A,
                 Start((("c", "budget"),)), id="worth waiting: not for requests of a length never measured"),
    pytest.param(world(srv("a", estimate=100, load_s=5),
                       srv("b", RUNNING, estimate=100, running_since=NOW - 2, min_resident=3, rate=1, load_s=5,
                           urgency=0.01),
                       srv("c", RUNNING, estimate=100, load_s=5, urgency=1), budget=250), ASK_A,
                 Wait(claim=("b",)), id="worth waiting: for the last second of a min_resident, rather than "
                                        "stopping one about to be asked for"),
    pytest.param(world(srv("a", estimate=100, load_s=5),
                       on("0", "b", estimate=100, inflight=1, serve_s=1, load_s=5, urgency=0.01),
                       on("1", "c", estimate=100, load_s=5, urgency=1), gpus={"0": 100, "1": 100}), ASK_A,
                 Wait(claim=("b",)), id="per GPU: on the GPU whose busy server is worth waiting for"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, running_since=NOW - 1,
                                                   **HOT), budget=150), ASK_A, Wait(claim=("b",)),
                 id="min_resident: a server loaded 1 s ago is not evicted: no thrash, the request waits"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, running_since=NOW - 3,
                                                   **HOT), budget=150), ASK_A, Start((("b", "budget"),)),
                 id="min_resident: once it has stayed its time it may go"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, running_since=NOW - 1, **HOT,
                                                   last_used=10),
                       srv("c", RUNNING, estimate=100, last_used=90, load_s=9, urgency=1), budget=250), ASK_A,
                 Start((("c", "budget"),)), id="min_resident: a server past it goes before one still inside it"),
    pytest.param(world(a(), b(running_since=NOW - 1, **HOT), groups=duo()), ASK_A, Wait(claim=("b",)),
                 id="min_resident: holds for an exclusive group's swap too"),
    pytest.param(world(a(RUNNING, claims=frozenset({3}), running_since=NOW - 1, **HOT)), ASK_A, Admit(),
                 id="collation: claimed but inside min_resident, a later request for it is still served"),
    pytest.param(world(a(RUNNING, claims=frozenset({3}), running_since=NOW - 3, **HOT)), ASK_A, Wait(),
                 id="collation ends with min_resident: then the earlier claim goes first"),
    # -- per-GPU budgets (defaults.vram_budget: {0: ..., 1: ...}) --------------------------
    pytest.param(world(srv("a", estimate=100), gpus={"0": 300, "1": 150}), ASK_A, Start((), ("1",)),
                 id="per GPU: an unpinned profile goes where it fits best (the fullest GPU it fits on)"),
    pytest.param(world(srv("a", estimate=100), on("1", "b", estimate=100), gpus={"0": 300, "1": 150}), ASK_A,
                 Start((), ("0",)), id="per GPU: where it stops nothing"),
    pytest.param(world(srv("a", estimate=100, devices=("1",), pinned=True), on("1", "b", estimate=100),
                       gpus={"0": 300, "1": 150}), ASK_A, Start((("b", "budget"),), ("1",)),
                 id="per GPU: a pinned profile stays pinned, and stops what it must there"),
    pytest.param(world(srv("a", estimate=100), on("0", "b", estimate=100, load_s=20, urgency=0.5),
                       on("1", "c", estimate=100, load_s=1, urgency=0.1), gpus={"0": 100, "1": 100}), ASK_A,
                 Start((("c", "budget"),), ("1",)), id="per GPU: on the GPU whose victim is cheapest to reload"),
    pytest.param(world(srv("a", estimate=100), on("0", "b", estimate=100, inflight=1),
                       on("1", "c", estimate=100, load_s=30, urgency=1), gpus={"0": 100, "1": 100}), ASK_A,
                 Start((("c", "budget"),), ("1",)), id="per GPU: never where it would wait for a busy server"),
    pytest.param(world(srv("a", estimate=150), gpus={"0": 100, "1": 100}), ASK_A, Start((), ("0", "1")),
                 id="per GPU: bigger than any one GPU: split evenly over them all"),
    pytest.param(world(srv("a", estimate=150), on("1", "b", estimate=50), gpus={"0": 100, "1": 100}), ASK_A,
                 Start((("b", "budget"),), ("0", "1")), id="per GPU: a split stops what it must on each GPU"),
    pytest.param(world(srv("a", estimate=201), gpus={"0": 100, "1": 100}), ASK_A, Reject("too-big"),
                 id="per GPU: more than all the GPUs hold is refused"),
    pytest.param(world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, running_since=NOW - 1, min_resident=3,
                                                   rate=1 / 300), budget=150), ASK_A, Start((("b", "budget"),)),
                 id="min_resident: a server asked for once lately is not kept (not in demand)"),
]


@pytest.mark.parametrize(("w", "req", "expected"), CASES)
def test_decide(w: World, req: Request, expected):
    assert decide(w, req) == expected


def test_a_min_resident_wait_says_when_to_decide_again():
    """A request held back by min_resident is woken when the time is up, not only on a change."""
    w = world(srv("a", estimate=100), srv("b", RUNNING, estimate=100, running_since=NOW - 1, **HOT),
              budget=150)
    d = decide(w, ASK_A)
    assert isinstance(d, Wait) and d.until == NOW + 2
    assert d.why == "waiting for b (loaded 1.0 s ago, min_resident 3 s) to make room for a"
    assert decide(world(a(), b(inflight=1), groups=duo()), ASK_A).until is None


def test_a_wait_and_a_refusal_say_why():
    assert decide(world(a(), b(inflight=1), groups=duo()), ASK_A).why == "waiting for b (busy) to make room for a"
    too_big = decide(world(srv("a", estimate=3 << 30), budget=2 << 30), ASK_A)
    assert "more than the whole VRAM budget" in too_big.text and "GiB" in too_big.text
    assert decide(world(a(FAILED, failed_at=NOW, reason="exited with code 1")), ASK_A).text == "exited with code 1"


def test_a_start_never_stops_a_server_serving_or_owed_a_request():
    """The invariant behind the table, over many random worlds: a Start's victims are idle,
    with no older request waiting for them and no older claim on them, and not kept by min_resident."""
    rnd = random.Random(13)
    states = list(GatewayState)
    for _ in range(3000):
        servers = [Server(n, rnd.choice(states), inflight=rnd.choice([0, 0, 1, 3]), limit=4,
                          waiting=frozenset(rnd.sample(range(1, 10), rnd.randint(0, 2))),
                          claims=frozenset(rnd.sample(range(1, 10), rnd.randint(0, 1))),
                          group=rnd.choice([None, "g"]), estimate=rnd.choice([0, 100, 200]),
                          last_used=rnd.random() * NOW, load_s=rnd.choice([0, 1, 9]), rate=rnd.random(),
                          running_since=rnd.choice([None, NOW - 1, NOW - 10]), min_resident=rnd.choice([0, 3]),
                          devices=rnd.choice([(), ("0",), ("1",), ("0", "1")]), pinned=rnd.random() < 0.3)
                   for n in "abcde"]
        groups = {"g": Group(tuple(s.name for s in servers if s.group == "g"), exclusive=rnd.random() < 0.8)}
        w = World({s.name: s for s in servers}, groups, rnd.choice([None, 300, 500]), NOW,
                  gpus=rnd.choice([{}, {"0": 200, "1": 300}]))
        req = Request(rnd.choice("abcde"), ticket=rnd.randint(1, 10))
        d = decide(w, req)
        if isinstance(d, Start):
            for name, _ in d.victims:
                v = w.servers[name]
                assert v.state is RUNNING and v.inflight == 0, (w, req, d)
                assert not any(t < req.ticket for t in v.waiting | v.claims), (w, req, d)
                assert not resident(v, NOW), (w, req, d)


# -- idle TTL and the primary's return -------------------------------------------------------
@pytest.mark.parametrize(("server", "expired"), [
    pytest.param(srv("a", RUNNING, idle_ttl=10, last_used=NOW - 10), True, id="idle for its TTL: stopped"),
    pytest.param(srv("a", RUNNING, idle_ttl=10, last_used=NOW - 9), False, id="not yet"),
    pytest.param(srv("a", RUNNING, idle_ttl=None, last_used=0), False, id="no TTL: never"),
    pytest.param(srv("a", RUNNING, idle_ttl=10, last_used=0, inflight=1), False, id="serving a request"),
    pytest.param(srv("a", RUNNING, idle_ttl=10, last_used=0, waiting=frozenset({1})), False, id="awaited"),
    pytest.param(srv("a", RUNNING, idle_ttl=10, last_used=0, claims=frozenset({1})), False, id="claimed"),
    pytest.param(srv("a", RECOVERING, idle_ttl=10, last_used=0), False, id="not running"),
])
def test_idle_expired(server: Server, expired: bool):
    assert idle_expired(world(server)) == (["a"] if expired else [])


def test_idle_ttl_of_a_group_member():
    g = Group(("main", "side"), primary="main")
    assert idle_ttl("side", None, g, 60.0) == 60.0  # serve --primary-return
    assert idle_ttl("side", 5.0, g, 60.0) == 5.0  # its own idle_ttl wins
    assert idle_ttl("main", None, g, 60.0) is None  # the primary stays
    assert idle_ttl("x", None, Group(("x", "y")), 60.0) is None  # no primary: no default


@pytest.mark.parametrize(("servers", "budget", "closing", "expected"), [
    pytest.param([srv("main"), srv("side")], None, False, "main", id="the group went idle: the primary returns"),
    pytest.param([srv("main", FAILED), srv("side")], None, False, "main", id="even after a failed start"),
    pytest.param([srv("main"), srv("side"), srv("third", STARTING)], None, False, None,
                 id="another member is live: not"),
    pytest.param([srv("main"), srv("side", waiting=frozenset({4}))], None, False, None,
                 id="a request waits for a member: not"),
    pytest.param([srv("main", estimate=200), srv("side"), srv("x", RUNNING, estimate=200)], 300, False, None,
                 id="it would have to stop something: not"),
    pytest.param([srv("main"), srv("side")], None, True, None, id="shutting down: not"),
])
def test_primary_to_restore(servers: list[Server], budget: int | None, closing: bool, expected: str | None):
    servers = [s if s.name == "x" else replace(s, group="duo") for s in servers]
    g = {"duo": Group(tuple(s.name for s in servers if s.group == "duo"), primary="main")}
    w = World({s.name: s for s in servers}, g, budget, NOW, closing=closing)
    assert primary_to_restore(w, "side", ticket=9) == expected
    assert primary_to_restore(w, "main", ticket=9) is None  # the primary itself went idle: nothing to bring back


@pytest.mark.parametrize(("state", "ours", "policy", "stop"), [
    (STARTING, False, "started", True), (RUNNING, True, "started", True), (RUNNING, False, "started", False),
    (RUNNING, False, "all", True), (FAILED, False, "all", True), (STOPPED, True, "all", False),
    (STARTING, True, "none", False), (STOPPING, True, "all", False),
])
def test_stop_on_exit(state: GatewayState, ours: bool, policy: str, stop: bool):
    assert stop_on_exit(state, ours, policy) is stop


# -- states -----------------------------------------------------------------------------------
def test_every_transition_not_in_the_table_raises():
    for old, new in itertools.product(GatewayState, GatewayState):
        if new in TRANSITIONS[old]:
            check_transition(old, new)
        else:
            with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
                check_transition(old, new)
    assert STOPPING not in TRANSITIONS[STOPPED] and RUNNING not in TRANSITIONS[STOPPING]


def test_every_supervisor_state_has_a_gateway_reading():
    assert set(FROM_SUPERVISOR) == set(State)
    assert FROM_SUPERVISOR["backoff"] is RECOVERING and FROM_SUPERVISOR["unhealthy"] is RUNNING


class NoControl:
    """The pool is never started here, so nothing calls these."""

    def start(self, name: str) -> str:
        raise AssertionError(name)

    stop = status = start


def test_pool_set_takes_only_a_gateway_state_and_an_allowed_transition():
    pool = Pool(Config(profiles={"a": Profile(name="a", model="m.gguf", port=1)}), GatewayConfig(), NoControl())
    rec = pool.records["a"]
    with pytest.raises(IllegalTransition, match="not a GatewayState"):
        pool._set(rec, "starting")  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition, match="stopped -> stopping"):
        pool._set(rec, STOPPING)
    assert rec.state is STOPPED and rec.version == 0
    pool._set(rec, STARTING)
    assert rec.state is STARTING and rec.state == "starting" and rec.version == 1
