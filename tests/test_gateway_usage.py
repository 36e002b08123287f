"""The gateway's token counts from a whole JSON answer (llmctl.gateway.proxy.usage_from_body):
read from the end of the body, without parsing it all. The bodies are written here in the
layouts the servers use: llama-server's members in key order (``timings`` then ``usage``, last),
vLLM's in declaration order (``usage`` after ``data``/``choices``, then null extras)."""

from __future__ import annotations

import json
import random
import time

from llmctl.gateway.proxy import usage_from_body, usage_of

USAGE = {"prompt_tokens": 2048, "total_tokens": 2048}


def embeddings(rows: int = 256, dim: int = 4096, layout: str = "llama") -> bytes:
    rnd = random.Random(7)
    data = [{"embedding": [rnd.uniform(-1, 1) for _ in range(dim)], "index": i, "object": "embedding"}
            for i in range(rows)]
    if layout == "llama":
        body = {"data": data, "model": "m", "object": "list", "usage": USAGE}
    else:
        body = {"id": "embd-1", "object": "list", "created": 1, "model": "m", "data": data, "usage": USAGE,
                "kv_transfer_params": None}
    return json.dumps(body, sort_keys=layout == "llama").encode()


def best_of(n: int, fn, arg) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times), out


def test_a_256_by_4096_embeddings_body_gives_its_usage_at_a_small_fraction_of_a_parse():
    for layout in ("llama", "vllm"):
        body = embeddings(layout=layout)
        assert len(body) > 10_000_000
        parse, parsed = best_of(2, json.loads, body)
        scan, found = best_of(3, usage_from_body, body)
        assert found == usage_of(parsed) == (2048, None)
        assert scan < parse / 20, (layout, scan, parse)  # ~1 ms against ~300 ms here


def test_chat_answers_in_both_layouts_and_llama_server_timings_alone():
    choices = [{"index": 0, "message": {"role": "assistant", "content": 'say "usage": {"prompt_tokens": 1}'}}]
    usage = {"prompt_tokens": 30, "completion_tokens": 12}
    timings = {"prompt_n": 10, "cache_n": 20, "predicted_n": 12}
    llama = {"choices": choices, "id": "x", "model": "m", "timings": timings, "usage": usage}
    vllm = {"id": "x", "choices": choices, "usage": usage, "prompt_logprobs": None, "kv_transfer_params": None}
    native = {"content": "usage", "timings": timings, "tokens_cached": 20}
    anthropic = {"id": "m", "type": "message", "content": [{"type": "tool_use", "input": {"usage": {
        "input_tokens": 99, "output_tokens": 99}}}], "usage": {"input_tokens": 7, "output_tokens": 3}}
    for obj in (llama, vllm, native, anthropic):
        for body in (json.dumps(obj).encode(), json.dumps(obj, indent=2).encode() + b"\n"):
            assert usage_from_body(body) == usage_of(obj) != (None, None), body


def test_no_usage_a_decoy_or_a_cut_off_body_gives_none():
    decoys = [
        {"data": [{"embedding": [0.5], "usage": {"prompt_tokens": 5}}], "object": "list"},  # nested, not top level
        {"content": 'x", "usage": {"prompt_tokens": 5}}', "id": "y"},  # inside a string (escaped)
        {"choices": [{"text": "usage"}], "note": ["usage"]},  # a value, not a key
        {'say \\"usage': {"prompt_tokens": 5}},  # a key that ends in an escaped quote and usage
    ]
    for obj in decoys:
        body = json.dumps(obj).encode()
        assert usage_from_body(body) == usage_of(obj) == (None, None), body
    whole = embeddings(rows=4, dim=64)
    assert usage_from_body(whole) == (2048, None)
    for cut in (len(whole) - 1, len(whole) - 20, len(whole) // 2, 1, 0):
        assert usage_from_body(whole[:cut]) == (None, None), cut
    assert usage_from_body(b"[" + whole + b"]") == (None, None)  # not an object
    assert usage_from_body(whole + b"}") == (None, None)  # not JSON
    assert usage_from_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 1}, "x": "\xff"}') == (None, None)
