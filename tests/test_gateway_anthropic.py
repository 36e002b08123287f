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

import json

import pytest

from llmctl.gateway import anthropic as api
from llmctl.gateway.anthropic_stream import ChatStream
from llmctl.inference.params import Params

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
