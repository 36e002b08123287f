"""Anthropic's Messages API on the gateway.

The first half checks the translation (llmctl.gateway.anthropic, pure) as a table of mappings:
requests to chat completions, answers, errors and event streams back.

The second half runs a real `llmctl serve` (a subprocess, as a user runs it) in front of real
tiny llama-servers (SmolLM2) and talks to it with the official `anthropic` client: text,
streaming events in order, a system prompt, stop sequences, a task as the model, counting
tokens, keys, errors. llama-server answers /v1/messages itself, so the gateway passes those
requests through; the translated path runs against the same server through a task that sets
`seed` (a value the Messages API has no field for: the gateway then goes through chat
completions), and its answers must equal the passed-through ones word for word (greedy
decoding). "plain" is tests/helpers/slow_server.py, which answers chat completions only (a
404 on /v1/messages, like an engine without the Messages API, which cannot run here): the
gateway learns that and translates.

Tool use: SmolLM2 does not emit a tool call, not even with `tool_choice: any` and a Hermes-style
chat template with <tool_call> tags (this llama-server's template analysis puts no grammar on
it), so the tool-use round trip is checked as far as it can be: a conversation holding the
assistant's tool_use and the user's tool_result reaches the model (its greedy answer repeats
the tool's result), identically passed through and translated; the answer side (tool calls to
tool_use blocks, streamed as input_json_delta) is checked in the mapping tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import pytest

from llmctl.gateway import anthropic as api
from llmctl.gateway.anthropic_stream import ChatStream
from llmctl.inference.params import Params

from .util import free_port, wait_for

WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
TOOL_TURNS = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                      {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                       "input": {"city": "Paris"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}]},
]


# -- the request ---------------------------------------------------------------------------
def test_request_maps_system_blocks_sampling_and_stream():
    body = {"model": "m", "max_tokens": 9, "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stream": True,
            "stop_sequences": ["END"], "metadata": {"user_id": "u"},
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.png"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                                  {"type": "text", "text": "A cat."}]},
                {"role": "user", "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}]}]}
    assert api.to_chat(body) == {
        "model": "m", "max_tokens": 9, "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop": ["END"],
        "stream": True, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                         {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "One\nTwo"}]}


def test_request_maps_tool_use_and_tool_results_and_tools():
    turns = [*TOOL_TURNS[:2], {"role": "user", "content": [
        {"type": "text", "text": "And then?"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": True}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_3", "name": "get_weather", "input": {}}]}]
    tools = [WEATHER_TOOL, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    out = api.to_chat({"model": "m", "messages": turns, "tools": tools,
                       "tool_choice": {"type": "any", "disable_parallel_tool_use": True}})
    assert out["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},  # tool results first, as OpenAI wants
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]
    # the server-run tool (web search) is left out: nothing here can run it
    assert out["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER_TOOL["input_schema"], "description": "The weather in a city"}}]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, {"tool_choice": "auto"}), ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
    (None, {}),
])
def test_tool_choice(choice, expected):
    out = api.to_chat({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": choice})
    assert {k: v for k, v in out.items() if k in ("tool_choice", "parallel_tool_calls")} == expected


@pytest.mark.parametrize("message, words", [
    ({"role": "user", "content": [{"type": "document", "source": {"type": "base64", "data": "JVBERi0="}}]},
     "a document block with a base64 source"),
    ({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {"type": "base64", "data": "AA"}}]}]}, "image block inside `tool_result`"),
    ({"role": "assistant", "content": [{"type": "image", "source": {}}]}, "assistant message cannot hold a image"),
    ({"role": "user", "content": [{"text": "no type"}]}, "must be an object with a `type`"),
    ({"role": "system", "content": "x"}, "`role` user or assistant"),
    ({"role": "user", "content": 5}, "a string or a list of blocks"),
])
def test_untranslatable_requests_say_what(message, words):
    with pytest.raises(api.Untranslatable, match=words.replace("(", r"\(")):
        api.to_chat({"messages": [message]})


def test_a_text_document_becomes_text():
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The text."}}
    assert api.to_chat({"messages": [{"role": "user", "content": [doc]}]})["messages"] == [
        {"role": "user", "content": "The text."}]


def test_task_values_fill_in_what_the_client_did_not_send():
    params = Params(sampling={"temperature": 0.1, "max_tokens": 7, "stop": ["x"], "top_k": 3}, system="Sys.")
    body = {"model": "t", "messages": [], "temperature": 0.9}
    assert api.fill(body, params) == {"model": "t", "messages": [], "temperature": 0.9, "max_tokens": 7,
                                      "stop_sequences": ["x"], "top_k": 3, "system": "Sys."}
    assert api.fill({**body, "system": "Mine."}, params)["system"] == "Mine."
    assert api.fill(body, params, sampling=False) == {**body, "system": "Sys."}  # count_tokens: the prompt only
    assert not api.needs_chat(params)
    assert api.needs_chat(Params(sampling={"temperature": 0, "seed": 1}))  # no Messages field for a seed


# -- the answer ----------------------------------------------------------------------------
def test_answer_maps_text_reasoning_tool_calls_and_usage():
    resp = {"id": "chatcmpl-1", "model": "smol", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "reasoning_content": "The user wants weather.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                       {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 20}}}
    assert api.from_chat(resp) == {
        "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "smol",
        "content": [{"type": "thinking", "thinking": "The user wants weather.", "signature": ""},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "f", "input": {"arguments": "not json"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 12, "cache_read_input_tokens": 20}}


@pytest.mark.parametrize("choice, stops, expected", [
    ({"finish_reason": "stop"}, None, ("end_turn", None)),
    ({"finish_reason": "length"}, None, ("max_tokens", None)),
    ({"finish_reason": "content_filter"}, None, ("refusal", None)),
    ({"finish_reason": "stop", "stop_reason": "END"}, ["END"], ("stop_sequence", "END")),  # vLLM says which
    ({"finish_reason": "stop", "stop_reason": 2}, ["END"], ("end_turn", None)),  # vLLM: an EOS token id
    ({"finish_reason": None}, None, (None, None)),
])
def test_stop_reasons(choice, stops, expected):
    assert api.stop_reason(choice, stops) == expected


def test_usage_from_llama_server_timings():
    assert api.usage({"timings": {"prompt_n": 3, "cache_n": 8, "predicted_n": 5}}) == {
        "input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 8}


@pytest.mark.parametrize("status, raw, kind, message", [
    (400, b'{"error": {"message": "bad field", "type": "invalid_request_error"}}', "invalid_request_error",
     "bad field"),
    (404, b'{"detail": "Not Found"}', "not_found_error", "Not Found"),
    (429, b"slow down", "rate_limit_error", "slow down"),
    (500, b"", "api_error", "HTTP 500"),
    (502, b'{"error": "x"}', "api_error", '{"error": "x"}'),
])
def test_errors_become_anthropic_shaped(status, raw, kind, message):
    assert json.loads(api.error_from(status, raw)) == {"type": "error", "error": {"type": kind, "message": message}}


def test_anthropic_errors_and_answers_pass_unchanged():
    ours = b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}'
    assert api.error_from(529, ours) == ours and api.error_from(200, b"{}") == b"{}"
    assert json.loads(api.answer(200, b"<html>"))["error"]["type"] == "api_error"  # not JSON: the server's fault


# -- streams -------------------------------------------------------------------------------
def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> bytes:
    body = {"id": "c1", "model": "smol", "choices": [] if delta is None else
            [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: "), block
            out.append((name[7:], json.loads(data[6:])))
    return out


def translate(raw: bytes, piece: int = 7, stops: list[str] | None = None) -> list[tuple[str, dict]]:
    """Fed in pieces of ``piece`` bytes: lines split anywhere must not matter."""
    s = ChatStream(stops)
    out = b"".join(s.feed(raw[i:i + piece]) for i in range(0, len(raw), piece)) + s.end()
    return events(out)


def test_a_text_stream_becomes_the_event_sequence():
    raw = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}) + chunk({"content": "lo"})
           + chunk({}, "length") + chunk(None, usage={"prompt_tokens": 4, "completion_tokens": 2})
           + b"data: [DONE]\n\n")
    for piece in (1, 7, len(raw)):
        got = translate(raw, piece)
        assert [name for name, _ in got] == ["message_start", "content_block_start", "content_block_delta",
                                             "content_block_delta", "content_block_stop", "message_delta",
                                             "message_stop"]
        assert got[0][1]["message"]["id"] == "c1" and got[0][1]["message"]["content"] == []
        assert got[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        assert [d["delta"]["text"] for n, d in got if n == "content_block_delta"] == ["Hel", "lo"]
        assert got[5][1] == {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                             "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 0}}


def test_a_stream_with_reasoning_and_tool_calls():
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    raw = (chunk({"reasoning_content": "Think."}) + chunk({"content": "Sure."}) + chunk({"tool_calls": [call]})
           + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})
           + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
           + chunk({}, "tool_calls") + b"data: [DONE]\n\n")
    got = translate(raw)
    starts = [d["content_block"] for n, d in got if n == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""},
                      {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}]
    deltas = [(d["index"], d["delta"]) for n, d in got if n == "content_block_delta"]
    assert deltas == [(0, {"type": "thinking_delta", "thinking": "Think."}),
                      (1, {"type": "text_delta", "text": "Sure."}),
                      (2, {"type": "input_json_delta", "partial_json": '{"city": '}),
                      (2, {"type": "input_json_delta", "partial_json": '"Paris"}'})]
    assert [d["index"] for n, d in got if n == "content_block_stop"] == [0, 1, 2]  # each closed before the next
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use" and got[-1][0] == "message_stop"


def test_stream_errors_and_ends_without_done():
    broken = translate(chunk({"content": "a"}) + b'data: {"error": {"message": "context full", "code": 400}}\n\n')
    assert [n for n, _ in broken] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert broken[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "context full"}}
    last = {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]}
    ended = translate(chunk({"content": "a"}) + b"data: " + json.dumps(last).encode() + b"\n\n", stops=["END"])
    assert [n for n, _ in ended][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert ended[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    empty = translate(b"data: [DONE]\n\n")  # nothing at all: still a whole message
    assert [n for n, _ in empty] == ["message_start", "message_delta", "message_stop"]
    cut = translate(chunk({"content": "a"}))  # no finish_reason, no [DONE]: the server died
    assert cut[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "the server's answer ended before its last event"}})


# -- end to end: `llmctl serve`, real llama-servers, the anthropic client -------------------
GW_KEY = "gw-" + os.urandom(6).hex()
BACKEND_KEY = "sk-backend-" + os.urandom(6).hex()
KEY_ENV = "LLMCTL_TEST_ANTHROPIC_BACKEND_KEY"
SLOW = str(Path(__file__).parent / "helpers" / "slow_server.py")
IN_TERMINAL = str(Path(__file__).parent / "helpers" / "llmctl_in_terminal.py")
SUMMARY = "Answer in one short sentence."
STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]


@dataclass
class Served:
    url: str
    config: object  #: the profiles (load_profiles)
    home: Path  #: the module's LLMCTL_HOME

    def client(self, **kw) -> anthropic.Anthropic:
        """The key as `x-api-key: KEY`, what Claude Code and the anthropic clients before 2.x
        send (this one sends api_key= as a Bearer token)."""
        if "api_key" not in kw and "auth_token" not in kw:
            kw.setdefault("default_headers", {"x-api-key": GW_KEY})
        return anthropic.Anthropic(base_url=self.url, max_retries=0, timeout=120, **kw)

    def ask(self, model: str, **kw) -> anthropic.types.Message:
        kw.setdefault("max_tokens", 12)
        kw.setdefault("messages", STORY)
        return self.client().messages.create(model=model, **kw)

    def text(self, model: str, **kw) -> str:
        return "".join(b.text for b in self.ask(model, **kw).content if b.type == "text")

    def last_params(self) -> dict:
        """The sampling parameters of light's last request, as its server saw them (/slots)."""
        slots = httpx.get(self.url + "/upstream/light/slots", headers={"x-api-key": GW_KEY}, timeout=30).json()
        return max((s for s in slots if "params" in s), key=lambda s: s["id_task"])["params"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, smollm2, llama_server):
    """`llmctl serve` with a key, in front of "light" (SmolLM2, with a key of its own) and
    "plain" (the slow server: no /v1/messages), both started up front."""
    from llmctl import Supervisor, load_profiles

    root = tmp_path_factory.mktemp("gateway-anthropic")
    home, f = root / "home", root / "llmctl.yaml"
    f.write_text(f"""
profiles:
  light: {{model: {smollm2}, port: {free_port()}, ctx_size: 2048, parallel: 1, threads: 2,
           api_key_env: {KEY_ENV}, start_timeout: 120}}
  plain: {{model: {smollm2}, port: {free_port()}, binary: {SLOW}, stop_timeout: 5,
           env: {{SLOW_SERVER: "--interval 0.01 --hold 0"}}}}
tasks:
  summary: {{profile: light, max_tokens: 6, system: "{SUMMARY}"}}
  seeded: {{profile: light, seed: 7}}
defaults:
  sampling: {{temperature: 0}}
""")
    env = dict(os.environ, LLMCTL_HOME=str(home), LLMCTL_GATEWAY_KEY=GW_KEY, **{KEY_ENV: BACKEND_KEY})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMCTL_HOME", str(home))
        mp.setenv(KEY_ENV, BACKEND_KEY)
        config = load_profiles([str(f)])
        sup = Supervisor(config)
        try:
            sup.start(["light", "plain"])
            with serving(f, env) as url:
                yield Served(url, config, home)
        finally:
            sup.stop(None)


@contextlib.contextmanager
def serving(profiles: Path, env: dict[str, str]):
    port = free_port()
    proc = subprocess.Popen([sys.executable, IN_TERMINAL, "-f", str(profiles), "serve", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or any(url + "/v1" in ln for ln in lines), 60, "the gateway's URL")
        assert proc.poll() is None, "".join(lines)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)


@pytest.mark.engine
def test_text_passed_through_and_translated_alike(served):
    """light's own /v1/messages answers "light"; the task "seeded" sets a seed, which the
    Messages API cannot carry, so it goes through chat completions, and the seed reaches the
    server. Greedy decoding: both say the same."""
    raw = served.client().messages.with_raw_response.create(model="light", max_tokens=12, messages=STORY)
    assert raw.headers["x-llmctl-profile"] == "light" and "x-llmctl-task" not in raw.headers
    native = raw.parse()
    assert native.type == "message" and native.role == "assistant" and native.content[0].type == "text"
    assert native.stop_reason == "max_tokens" and native.usage.output_tokens == 12
    assert native.usage.input_tokens + (native.usage.cache_read_input_tokens or 0) > 10
    assert served.last_params()["seed"] != 7 and served.last_params()["temperature"] == 0  # defaults.sampling
    raw = served.client().messages.with_raw_response.create(model="seeded", max_tokens=12, messages=STORY)
    assert raw.headers["x-llmctl-task"] == "seeded" and raw.headers["x-llmctl-profile"] == "light"
    translated = raw.parse()
    assert served.last_params()["seed"] == 7
    assert translated.content[0].text == native.content[0].text and native.content[0].text.strip()
    assert translated.stop_reason == "max_tokens" and translated.usage.output_tokens == 12
    assert translated.usage.input_tokens + (translated.usage.cache_read_input_tokens or 0) > 10


@pytest.mark.engine
@pytest.mark.parametrize("model", ["light", "seeded"])
def test_streaming_events_come_in_order(served, model):
    whole = served.text(model, max_tokens=8)
    stream = served.client().messages.create(model=model, max_tokens=8, messages=STORY, stream=True)
    got = list(stream)
    names = [e.type for e in got]
    deltas = names.count("content_block_delta")
    assert deltas >= 2 and names == ["message_start", "content_block_start", *["content_block_delta"] * deltas,
                                     "content_block_stop", "message_delta", "message_stop"]
    assert "".join(e.delta.text for e in got if e.type == "content_block_delta") == whole
    assert got[-2].delta.stop_reason == "max_tokens" and got[-2].usage.output_tokens == 8
    with served.client().messages.stream(model=model, max_tokens=8, messages=STORY) as s:
        assert s.get_final_message().content[0].text == whole  # the client's own accumulation


@pytest.mark.engine
def test_system_prompt_and_a_task_as_the_model(served):
    """The client's system prompt reaches the server (it counts), the task's when the client
    sends none, with the task's other values (max_tokens) filling in."""
    c = served.client()
    bare = c.messages.count_tokens(model="light", messages=STORY).input_tokens
    mine = c.messages.count_tokens(model="light", messages=STORY, system=SUMMARY).input_tokens
    # SmolLM2's template puts a default system prompt of its own where none is sent
    assert mine != bare and c.messages.count_tokens(model="summary", messages=STORY).input_tokens == mine
    assert served.text("seeded", system=SUMMARY) == served.text("light", system=SUMMARY)
    assert served.text("summary") == served.text("light", system=SUMMARY)
    r = httpx.post(served.url + "/v1/messages", headers={"x-api-key": GW_KEY},
                   json={"model": "summary", "messages": STORY}, timeout=120)  # no max_tokens: the task's
    assert r.status_code == 200 and r.headers["x-llmctl-task"] == "summary"
    assert r.json()["usage"]["output_tokens"] <= 6 and served.last_params()["n_predict"] == 6


@pytest.mark.engine
def test_stop_sequences(served):
    free = served.text("light", max_tokens=24)
    word = next(w for w in free.split()[2:] if len(w) >= 4 and w.isalpha())
    native = served.ask("light", max_tokens=24, stop_sequences=[word])
    assert native.content[0].text == free[:free.index(word)] and native.stop_sequence == word
    translated = served.ask("seeded", max_tokens=24, stop_sequences=[word])
    assert translated.content[0].text == native.content[0].text
    assert translated.stop_reason == "end_turn"  # llama-server's chat completions do not say which stop matched


@pytest.mark.engine
def test_tool_use_round_trip_reaches_the_model(served):
    """The assistant's tool_use and the user's tool_result reach the model, passed through and
    translated alike (SmolLM2 emits no tool call itself: see the module docstring)."""
    kw = {"messages": TOOL_TURNS, "tools": [WEATHER_TOOL], "max_tokens": 6}
    native = served.text("light", **kw)
    assert "Sunny" in native
    assert served.text("seeded", **kw) == native


@pytest.mark.engine
def test_keys_and_errors_in_anthropic_shape(served):
    c = served.client()
    for wrong in ({"api_key": "wrong"}, {"default_headers": {"x-api-key": "wrong"}}):
        with pytest.raises(anthropic.AuthenticationError):
            served.client(**wrong).messages.create(model="light", max_tokens=2, messages=STORY)
    for bearer in ({"api_key": GW_KEY}, {"auth_token": GW_KEY}):  # both Authorization: Bearer KEY here
        assert served.client(**bearer).messages.create(model="light", max_tokens=2, messages=STORY).content
    with pytest.raises(anthropic.NotFoundError) as missing:
        c.messages.create(model="claude-sonnet-4-5", max_tokens=2, messages=STORY)
    assert missing.value.body["type"] == "error" and missing.value.body["error"]["type"] == "not_found_error"
    assert "light" in missing.value.body["error"]["message"] and "summary" in missing.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="no `messages` list"):
        c.messages.create(model="light", max_tokens=2, messages=None)  # type: ignore[arg-type]
    form = httpx.post(served.url + "/v1/messages", headers={"x-api-key": GW_KEY}, data={"model": "light"})
    assert form.status_code == 415  # the guard's checks are the same as for chat completions


@pytest.mark.engine
def test_a_server_without_the_messages_api_is_translated(served):
    """plain's server answers /v1/messages with 404: the gateway sends the request again as a
    chat completion, and from then on translates for it; it cannot count tokens."""
    c = served.client()
    assert served.text("plain") == "late"
    got = list(c.messages.create(model="plain", max_tokens=3, messages=STORY, stream=True))
    assert [e.type for e in got] == ["message_start", "content_block_start", *["content_block_delta"] * 3,
                                     "content_block_stop", "message_delta", "message_stop"]
    assert "".join(e.delta.text for e in got if e.type == "content_block_delta") == "piece0 piece1 piece2 "
    assert got[-2].usage.output_tokens == 3
    with pytest.raises(anthropic.BadRequestError, match="counts tokens"):
        c.messages.count_tokens(model="plain", messages=STORY)


@pytest.mark.engine
@pytest.mark.parametrize("profile, why", [("plain", "ended before its last event"),
                                          ("light", "stopped in the middle of the answer")])
def test_a_stream_the_server_breaks_off_ends_with_an_error_event(served, monkeypatch, profile, why):
    """The server is killed in the middle of a stream, translated (plain) or passed through
    (light): the client gets Anthropic's error event, which it raises, not an answer that looks
    whole. plain's body ends with its connection (HTTP/1.0), so there the stream just ends
    without its last events; light's chunked body breaks off. Last in the module: the keepers
    restart the servers afterwards."""
    from llmctl import Supervisor

    monkeypatch.setenv("LLMCTL_HOME", str(served.home))
    pid = Supervisor(served.config).status([profile])[0].pid
    stream = served.client().messages.create(model=profile, max_tokens=1500, messages=STORY, stream=True)
    got = []
    with pytest.raises(anthropic.APIStatusError, match=why):
        for event in stream:
            got.append(event.type)
            if len(got) == 5:
                os.kill(pid, signal.SIGKILL)
    assert got[:5] == ["message_start", "content_block_start", *["content_block_delta"] * 3]
