"""The gateway end to end with real llama-servers and the official `openai` client: routing by
task, profile and alias to two servers, task parameters, streaming, client disconnect, on-demand
start, 429, 503 on a failed start, fallbacks, a backend killed mid-stream, keys.

One gateway (in this process, on a free port) and its servers serve the whole module: "light"
(SmolLM2, with a backend API key), "heavy" (Gemma) and "slow" are started up front with the
Supervisor, the others on demand by the gateway. "slow" is tests/helpers/slow_server.py, a
server that is slow on purpose, for the checks on timing (a request still in flight, pieces
spread over time), which a tiny model on a fast CPU may finish before. Everything runs under a
module LLMCTL_HOME and is stopped at the end."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from .util import free_port, wait_for

pytestmark = [pytest.mark.engine]

GW_KEY = "gw-" + os.urandom(6).hex()
BACKEND_KEY = "sk-backend-" + os.urandom(6).hex()
KEY_ENV = "LLMCTL_TEST_GATEWAY_BACKEND_KEY"
STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]
SLOW = str(Path(__file__).parent / "helpers" / "slow_server.py")


@dataclass
class Env:
    home: Path
    config: object
    gw: object  #: RunningGateway
    url: str
    slow_events: Path  #: what the slow server saw, one event a line (see tests/helpers/slow_server.py)

    def client(self, **kw) -> openai.OpenAI:
        kw.setdefault("api_key", GW_KEY)
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, timeout=120, **kw)

    def supervisor(self):
        from llmctl import Supervisor
        from llmctl.paths import Paths

        return Supervisor(self.config, Paths.from_env())

    def pid(self, name: str) -> int:
        entry = self.supervisor().status([name])[0]
        assert entry.pid, entry
        return entry.pid

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", headers={"authorization": f"Bearer {GW_KEY}"}).text

    def metric(self, line_start: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def seen_by_slow(self, prefix: str) -> list[str]:
        text = self.slow_events.read_text() if self.slow_events.exists() else ""
        return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def env(tmp_path_factory, smollm2, gemma, llama_server):
    from llmctl import Supervisor, load_profiles
    from llmctl.gateway import GatewayConfig, start_in_thread
    from llmctl.paths import Paths

    root = tmp_path_factory.mktemp("gateway-engine")
    home = root / "home"
    bogus = root / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + os.urandom(4096))
    events = root / "slow.events"
    f = root / "llmctl.yaml"
    f.write_text(f"""
profiles:
  light: {{model: {smollm2}, port: {free_port()}, ctx_size: 2048, parallel: 3, threads: 2, alias: tiny,
           api_key_env: {KEY_ENV}, start_timeout: 120}}
  heavy: {{model: {gemma}, port: {free_port()}, ctx_size: 1024, threads: 2, start_timeout: 120}}
  embed: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1, embeddings: true,
           args: {{pooling: mean}}}}
  broken: {{model: {bogus}, port: {free_port()}, restart: "no", start_timeout: 60}}
  victim: {{model: {smollm2}, port: {free_port()}, ctx_size: 1024, threads: 1, restart: "no"}}
  fragile: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1, restart: "no"}}
  slow: {{model: {smollm2}, port: {free_port()}, binary: {SLOW}, stop_timeout: 5,
          env: {{SLOW_SERVER: "--interval 0.1 --hold 60 --events {events}"}}}}
tasks:
  summary: {{profile: light, temperature: 0, max_tokens: 5, system: "Answer in one short sentence."}}
  reasoning: {{profile: heavy, temperature: 0, max_tokens: 5}}
  rescue: {{profile: broken, fallback: [light], max_tokens: 3}}
  sturdy: {{profile: fragile, fallback: [light], max_tokens: 3}}
""")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMCTL_HOME", str(home))
        mp.setenv(KEY_ENV, BACKEND_KEY)
        config = load_profiles([str(f)])
        sup = Supervisor(config)
        try:
            sup.start(["light", "heavy", "slow"])
            gw = start_in_thread(config, GatewayConfig(port=0, api_key=GW_KEY, max_concurrent=3, refresh_interval=0,
                                                       retry_failed_after=600),
                                 paths=Paths.from_env())
            try:
                yield Env(home, config, gw, gw.url, events)
            finally:
                gw.stop()
        finally:
            sup.stop(None)


@pytest.fixture(autouse=True)
def module_home(llmctl_home, monkeypatch, env):
    """Servers the gateway starts during a test belong to the module (stopped at its end)."""
    monkeypatch.setenv("LLMCTL_HOME", str(env.home))


def test_routes_by_task_profile_and_alias_to_two_servers(env):
    c = env.client()
    for model, profile in (("summary", "light"), ("reasoning", "heavy"), ("heavy", "heavy"), ("tiny", "light")):
        raw = c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                                          max_tokens=3)
        assert raw.headers["x-llmctl-profile"] == profile, model
        assert (raw.headers.get("x-llmctl-task") == model) == (model in ("summary", "reasoning"))
        assert raw.parse().choices[0].message.content
    done = c.completions.create(model="light", prompt="Once upon a time", max_tokens=3)
    assert done.choices[0].text and done.usage.completion_tokens <= 3
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])


def test_task_parameters_fill_in_and_the_client_wins(env):
    c = env.client()
    by_task = c.chat.completions.create(model="summary", messages=STORY)
    assert by_task.usage.completion_tokens <= 5  # the task's max_tokens (the server alone would write on)
    mine = c.chat.completions.create(model="summary", messages=STORY, max_tokens=2)
    assert mine.usage.completion_tokens == 2 and mine.choices[0].finish_reason == "length"
    # the task's system prompt is added when the client sends none (the same prompt as sending
    # it by hand to the bare profile), and only then
    task_system = [{"role": "system", "content": "Answer in one short sentence."}]
    by_hand = c.chat.completions.create(model="light", messages=task_system + STORY, max_tokens=1)
    assert by_task.usage.prompt_tokens == by_hand.usage.prompt_tokens
    assert c.chat.completions.create(model="light", messages=STORY, max_tokens=1).usage.prompt_tokens != \
        by_hand.usage.prompt_tokens  # (SmolLM2's template has its own default system prompt)
    own = [{"role": "system", "content": "Be terse, and never use more than a few words."}] + STORY
    assert c.chat.completions.create(model="summary", messages=own, max_tokens=1).usage.prompt_tokens == \
        c.chat.completions.create(model="light", messages=own, max_tokens=1).usage.prompt_tokens


def test_streaming_relays_chunks_as_they_come(env):
    """Relayed as generated, not collected: "slow" sends a piece every 0.1 s, on purpose, so the
    pieces must arrive spread over 2 s on any CPU. And a real llama-server's stream comes through
    whole (its end-of-text token ignored, so that it writes all 24 tokens and ends by length)."""
    c = env.client()
    times = []
    for chunk in c.chat.completions.create(model="slow", messages=STORY, max_tokens=20, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic())
    assert len(times) == 20
    # in many separate deliveries (a busy machine may bunch a few together; a buffering relay
    # sends one), the first long before the last
    deliveries = 1 + sum(b - a > 0.03 for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] > 1.0 and deliveries >= 10, [round(t - times[0], 3) for t in times]
    chunks = list(c.chat.completions.create(model="light", messages=STORY, max_tokens=24, stream=True, temperature=0,
                                            extra_body={"ignore_eos": True}))
    assert sum(bool(ch.choices and ch.choices[0].delta.content) for ch in chunks) >= 20
    assert chunks[-1].choices[0].finish_reason == "length"


def test_client_disconnect_cancels_the_generation(env):
    """600 tokens with the end-of-text token ignored: a generation long on any CPU. Run to its
    end, it would leave them all in the slot's cache; cancelled, the cache holds the prompt and
    the few tokens made before the client left."""
    light = env.config.profiles["light"]
    body = {"model": "light", "messages": STORY, "max_tokens": 600, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", env.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"authorization": f"Bearer {GW_KEY}"}) as r:
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data:")
            if events == 3:
                break
    t_closed = time.monotonic()
    slots = []
    while time.monotonic() - t_closed < 5:  # 600 tokens would take far longer
        slots = httpx.get(light.url + "/slots", headers={"authorization": f"Bearer {BACKEND_KEY}"}).json()
        if not any(s.get("is_processing") for s in slots):
            break
        time.sleep(0.1)
    assert not any(s.get("is_processing") for s in slots), slots
    last = max(slots, key=lambda s: s.get("id_task", -1))
    assert 0 < last["n_prompt_tokens"] < 300, last  # the prompt is ~60 tokens
    assert env.gw.gateway.pool.records["light"].inflight == 0
    assert env.metric('llmctl_gateway_requests_total{profile="light",endpoint="/v1/chat/completions",code="499"}') >= 1


def test_client_leaving_a_plain_request_ends_it_at_the_gateway(env):
    """A non-streaming request whose client gives up is cancelled at the gateway: its lease
    returned, the upstream request closed. "slow" holds a plain answer back for a minute, on
    purpose (a tiny model on a fast CPU may answer within the client's timeout), and records
    when the gateway's connection goes away."""
    body = {"model": "slow", "messages": STORY}
    line = 'llmctl_gateway_requests_total{profile="slow",endpoint="/v1/chat/completions",code="499"}'
    before = env.metric(line)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(env.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {GW_KEY}"},
                   timeout=httpx.Timeout(10, read=0.5))
    wait_for(lambda: env.metric(line) == before + 1, 10, "the 499 to be counted")
    assert env.gw.gateway.pool.records["slow"].inflight == 0
    gone = wait_for(lambda: env.seen_by_slow("plain-gone"), 10, "the upstream request to be closed")
    assert float(gone[-1].split()[1]) < 10  # seconds the server held it: the gateway left, not the answer


def test_on_demand_start_serves_every_waiting_request(env):
    assert env.supervisor().status(["embed"])[0].state == "stopped"
    c = env.client()
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda i: c.embeddings.create(model="embed", input=[f"text number {i}"]),
                                    range(3)))
        assert [len(r.data[0].embedding) for r in results] == [576, 576, 576]  # SmolLM2's width
        assert env.supervisor().status(["embed"])[0].state == "running"
        assert env.metric('llmctl_gateway_starts_total{profile="embed",outcome="ok"}') == 1
    finally:  # started during this test: stopped by it (the per-test leak check counts it as the test's)
        env.supervisor().stop(["embed"])


def test_concurrency_limit_answers_429(env):
    """Three streams held open ("slow" spreads 600 pieces over a minute, on purpose, so they are
    in flight on any CPU) fill serve --max-concurrent 3: a fourth request gets 429."""
    c = env.client()
    streams = [c.chat.completions.create(model="slow", messages=STORY, max_tokens=600, stream=True) for _ in range(3)]
    try:
        for s in streams:
            next(iter(s))  # all three admitted and streaming
        with pytest.raises(openai.RateLimitError) as err:
            c.chat.completions.create(model="slow", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert err.value.status_code == 429 and err.value.response.headers["retry-after"] == "1"
        assert "--max-concurrent" in err.value.message
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: env.gw.gateway.pool.records["slow"].inflight == 0, 10, "the streams to end")
    assert len(list(c.chat.completions.create(model="slow", messages=STORY, max_tokens=2, stream=True))) == 4


def test_failed_start_answers_503_with_the_reason_and_a_task_falls_back(env):
    c = env.client()
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="broken", messages=[{"role": "user", "content": "Hi"}])
    assert err.value.status_code == 503
    assert "broken failed to start" in err.value.message
    assert env.supervisor().status(["broken"])[0].state in ("failed", "stopped")
    raw = c.chat.completions.with_raw_response.create(model="rescue", messages=[{"role": "user", "content": "Hi"}])
    assert raw.headers["x-llmctl-profile"] == "light"
    assert raw.parse().usage.completion_tokens <= 3  # the task's parameters, on the fallback
    assert env.metric('llmctl_gateway_starts_total{profile="broken",outcome="failed"}') == 1


def test_backend_killed_mid_stream_ends_with_an_error_event(env):
    c = env.client()
    got: list[str] = []
    stream = c.chat.completions.create(model="victim", messages=STORY, max_tokens=400, stream=True)
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
                if len(got) == 3:
                    os.kill(env.pid("victim"), signal.SIGKILL)
    assert len(got) >= 3
    assert re.search(r"victim: the server stopped in the middle of the answer", err.value.message)
    # the client saw the error event before the gateway finished the request: poll its count
    wait_for(lambda: env.metric('llmctl_gateway_requests_total{profile="victim",endpoint="/v1/chat/completions",'
                                'code="502"}') == 1, 5, "the 502 to be counted")
    assert env.gw.gateway.pool.records["victim"].inflight == 0


def test_backend_dead_before_the_first_byte_passes_to_the_fallback(env):
    c = env.client()
    c.chat.completions.create(model="fragile", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    before = env.metric('llmctl_gateway_fallbacks_total{profile="light"}')
    os.kill(env.pid("fragile"), signal.SIGKILL)  # the gateway still thinks it runs
    raw = c.chat.completions.with_raw_response.create(model="sturdy", messages=[{"role": "user", "content": "Hi"}])
    assert raw.status_code == 200 and raw.headers["x-llmctl-profile"] == "light"
    assert env.metric('llmctl_gateway_fallbacks_total{profile="light"}') == before + 1
    deadline = time.monotonic() + 10  # and the gateway learns that it died
    while env.gw.gateway.pool.records["fragile"].state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.gw.gateway.pool.records["fragile"].state == "failed"


def test_models_list_tasks_and_profiles_with_their_state(env):
    models = {m.id: m.model_extra["llmctl"] for m in env.client().models.list().data}
    assert {"summary", "reasoning", "light", "heavy", "embed", "broken"} <= set(models)
    assert models["summary"]["kind"] == "task" and models["summary"]["state"] == "running"
    assert models["heavy"]["state"] == "running" and models["heavy"]["started_by_gateway"] is False
    assert models["light"]["served_names"][-1] == "tiny"
    assert env.metric('llmctl_gateway_tokens_total{profile="light",kind="completion"}') > 0
    assert env.metric('llmctl_gateway_up{profile="light"}') == 1


def test_keys_clients_need_theirs_and_backend_keys_stay_inside(env):
    with pytest.raises(openai.AuthenticationError):
        env.client(api_key="wrong").models.list()
    light = env.config.profiles["light"]
    ask = {"model": "light", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(light.url + "/v1/chat/completions", json=ask).status_code == 401  # the server wants its key
    r = httpx.post(env.url + "/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {GW_KEY}"})
    assert r.status_code == 200  # the gateway sent it (not the client's key)
    models = httpx.get(env.url + "/v1/models", headers={"authorization": f"Bearer {GW_KEY}"})
    seen = r.text + str(r.headers) + models.text
    seen += env.metrics()
    assert BACKEND_KEY not in seen
