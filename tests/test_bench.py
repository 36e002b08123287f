"""`llmctl bench`: the real CLI against a real llama-server (SmolLM2-135M, started with
`llmctl up` once for this module and stopped with `llmctl down` at the end) and the real
one-shot llama-completion / llama-cli, plus unit tests of the client-side speed figures used
when an engine (vLLM) reports no timings. bench on a real vLLM is in test_vllm.py."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from llmctl.bench import client_speeds, prompts_for, sample_of

from .util import cli, free_port

engine = pytest.mark.engine

MAX_TOKENS = 8
WORDS = 40
FAST = ["--max-tokens", str(MAX_TOKENS), "--prompt-words", str(WORDS)]
ROW_KEYS = {"profile", "mode", "runs", "prompt_tokens", "gen_tokens", "prompt_tps", "gen_tps", "ttft_ms",
            "total_ms", "source", "error", "samples"}
SAMPLE_KEYS = {"prompt_tokens", "cached_tokens", "gen_tokens", "prompt_tps", "gen_tps", "source", "ttft_ms",
               "total_ms", "finish_reason"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2, llama_server):
    """`up` of profile "sm" (SmolLM2, small context, 2 threads) in a module-wide LLMCTL_HOME;
    profile "off" is defined but never started. `down` at the end."""
    root = tmp_path_factory.mktemp("bench")
    port = free_port()
    profiles = root / "llmctl.yaml"
    profiles.write_text(f"""
profiles:
  sm: {{model: {smollm2}, port: {port}, ctx_size: 1024, threads: 2, start_timeout: 120}}
  off: {{model: {smollm2}, port: {free_port()}, ctx_size: 1024, threads: 2}}
""")
    env = {"LLMCTL_HOME": str(root / "home"), "LLMCTL_PROFILES": str(profiles)}
    r = cli("up", "sm", env=env)
    assert r.returncode == 0, r.stderr
    try:
        yield SimpleNamespace(env=env)
    finally:
        r = cli("down", "sm", env=env)
        assert r.returncode == 0, r.stderr


def bench_json(env: dict, *args: str, code: int = 0) -> list[dict]:
    r = cli("bench", *args, *FAST, "--json", env=env, timeout=120)
    assert r.returncode == code, r.stderr
    rows = json.loads(r.stdout)
    for row in rows:
        assert set(row) == ROW_KEYS
        for s in row["samples"]:
            assert set(s) == SAMPLE_KEYS
    return rows


def assert_plausible(row: dict, runs: int, source: str) -> None:
    """Speeds > 0, 0 < TTFT < total, the asked number of tokens generated."""
    assert row["error"] is None and row["runs"] == runs == len(row["samples"])
    assert row["source"] == source
    assert row["prompt_tokens"] > WORDS  # the words plus the instruction and the chat template
    for s in row["samples"]:
        assert s["source"] == source
        assert s["prompt_tps"] > 0 and s["gen_tps"] > 0
        assert 0 < s["ttft_ms"] < s["total_ms"]
        assert s["prompt_tokens"] == row["prompt_tokens"]  # the prompts differ in one digit only
        if s["finish_reason"] == "length":
            assert s["gen_tokens"] == MAX_TOKENS
        else:
            assert 0 < s["gen_tokens"] < MAX_TOKENS
    assert row["prompt_tps"] > 0 and row["gen_tps"] > 0
    assert 0 < row["ttft_ms"] < row["total_ms"]


# -- against the real engines ------------------------------------------------------------------
@engine
def test_server_mode_json(server):
    [row] = bench_json(server.env, "sm", "--mode", "server", "--runs", "2")
    assert row["profile"] == "sm" and row["mode"] == "server"
    assert_plausible(row, 2, "server")  # llama-server's own `timings`, labelled as such
    # each run's prompt is new to the server: at most the chat template's start comes from its cache
    assert all(s["cached_tokens"] < s["prompt_tokens"] // 2 for s in row["samples"])


@engine
def test_cli_mode_json(server):
    [row] = bench_json(server.env, "sm", "--mode", "cli", "--runs", "1")
    assert row["mode"] == "cli"
    assert_plausible(row, 1, "tool")  # the one-shot tool's perf lines
    assert row["samples"][0]["cached_tokens"] is None


@engine
def test_both_modes_same_prompts_and_table(server):
    rows = bench_json(server.env, "sm", "--runs", "1")  # default --mode both
    assert [r["mode"] for r in rows] == ["server", "cli"]
    srv, one = rows
    assert_plausible(srv, 1, "server")
    assert_plausible(one, 1, "tool")
    assert srv["prompt_tokens"] == one["prompt_tokens"]  # the same prompt, the same chat template

    r = cli("bench", "sm", "--runs", "1", *FAST, env=server.env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["PROFILE", "MODE", "RUNS", "PROMPT", "TOK", "PROMPT", "TOK/S", "GEN", "TOK",
                                "GEN", "TOK/S", "TTFT", "MS", "TOTAL", "MS", "SOURCE", "NOTE"]
    table = {cells[1]: cells for cells in (line.split() for line in lines[1:3])}
    assert set(table) == {"server", "cli"}
    for mode, source in (("server", "server"), ("cli", "tool")):
        cells = table[mode]
        assert cells[0] == "sm" and cells[2] == "1" and cells[9] == source
        assert int(cells[3]) == srv["prompt_tokens"] and int(cells[5]) == MAX_TOKENS
        assert all(float(c) > 0 for c in (cells[4], cells[6], cells[7], cells[8]))
    assert "*" not in r.stdout  # nothing measured by the client here
    assert "sm server run 1/1" in r.stderr  # progress on stderr


@engine
def test_server_not_running(server):
    [row] = bench_json(server.env, "off", "--mode", "server", "--runs", "2", code=11)
    assert row["mode"] == "server" and row["runs"] == 0 and row["samples"] == []
    assert "no running server" in row["error"] and row["prompt_tps"] is None and row["gen_tps"] is None

    r = cli("bench", "off", "--mode", "server", "--runs", "1", *FAST, env=server.env, timeout=60)
    assert r.returncode == 11
    [line] = [x for x in r.stdout.splitlines()[1:] if x.strip()]
    assert line.split()[:3] == ["off", "server", "0"] and "no running server for profile 'off'" in line
    assert "llmctl up off" in r.stderr


@engine
def test_both_modes_when_server_is_down(server):
    """cli mode still measures; the failed server row sets the exit code."""
    srv, one = bench_json(server.env, "off", "--runs", "1", code=11)
    assert srv["mode"] == "server" and "no running server" in srv["error"]
    assert_plausible(one, 1, "tool")


@engine
def test_client_figures_agree_with_the_servers(server, monkeypatch):
    """The fallback computed from a real llama-server's stream lands near the server's own
    figures for the same request."""
    from llmctl import load_profiles
    from llmctl.inference import run_task

    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    chunks: list[float] = []
    t0 = time.monotonic()
    res = run_task(prompts_for(1, 60)[0], profile="sm", mode="server", config=load_profiles(),
                   overrides={"max_tokens": 64, "temperature": 0.0}, on_text=lambda s: chunks.append(time.monotonic()),
                   timeout=60)
    t_end = time.monotonic()
    assert res.timings["predicted_n"] == res.tokens_out and len(chunks) >= res.tokens_out // 2
    measured = client_speeds(t0, chunks, res.tokens_in, res.tokens_out)
    assert measured["gen_tokens"] == res.tokens_out
    assert 0.3 < measured["gen_tps"] / res.timings["predicted_per_second"] < 3
    # prompt tokens / TTFT: every prompt token (cached ones too) over a time that holds the
    # server's prompt evaluation and more, so at most the server's speed scaled by that count
    t = res.timings
    assert 0 < measured["prompt_tps"] <= t["prompt_per_second"] * res.tokens_in / t["prompt_n"] * 1.05
    assert 0 < measured["ttft_ms"] < (t_end - t0) * 1000

    s = sample_of("server", res.timings, tokens_in=res.tokens_in, tokens_out=res.tokens_out, t0=t0,
                  chunk_times=chunks, t_end=t_end)
    assert s["source"] == "server" and s["gen_tps"] == round(res.timings["predicted_per_second"], 2)
    s = sample_of("server", {}, tokens_in=res.tokens_in, tokens_out=res.tokens_out, t0=t0,
                  chunk_times=chunks, t_end=t_end)  # what a vLLM answer looks like: no timings
    assert s["source"] == "client" and s["gen_tps"] == measured["gen_tps"]


# -- the client-side figures (pure) ------------------------------------------------------------
#: arrival times of a streamed answer (made up, shaped like vLLM's stream): first piece 0.25 s
#: after the request, then one every 20 ms; 11 tokens in 10 pieces (one piece holds two)
T0 = 100.0
CHUNKS = [T0 + 0.25 + 0.02 * i for i in range(10)]


def test_client_speeds_with_usage():
    m = client_speeds(T0, CHUNKS, prompt_tokens=50, completion_tokens=11)
    assert m["ttft_ms"] == 250.0
    assert m["prompt_tps"] == 200.0  # 50 tokens / 0.25 s
    assert m["gen_tps"] == pytest.approx(10 / 0.18, abs=0.01)  # 10 tokens after the first, over 0.18 s
    assert m["gen_tokens"] == 11


def test_client_speeds_without_usage_counts_chunks():
    m = client_speeds(T0, CHUNKS, prompt_tokens=None, completion_tokens=None)
    assert m["gen_tokens"] == 10
    assert m["gen_tps"] == pytest.approx(50.0, abs=0.01)  # 9 / 0.18 s
    assert m["prompt_tps"] is None and m["ttft_ms"] == 250.0


def test_client_speeds_degenerate_streams():
    assert client_speeds(T0, [], 50, None) == {"ttft_ms": None, "prompt_tps": None, "gen_tps": None,
                                                 "gen_tokens": 0}
    one = client_speeds(T0, [T0 + 0.1], 50, 1)
    assert one["gen_tps"] is None and one["prompt_tps"] == 500.0 and one["ttft_ms"] == 100.0
    assert client_speeds(T0, [T0, T0], 0, 2)["prompt_tps"] is None  # no elapsed time, no prompt count


def test_sample_labels_its_source():
    timings = {"prompt_n": 40, "prompt_per_second": 321.0, "predicted_n": 11, "predicted_per_second": 87.5,
               "cache_n": 10}
    s = sample_of("server", timings, tokens_in=50, tokens_out=11, t0=T0, chunk_times=CHUNKS, t_end=T0 + 0.5,
                  finish_reason="length")
    assert s == {"prompt_tokens": 50, "cached_tokens": 10, "gen_tokens": 11, "prompt_tps": 321.0,
                 "gen_tps": 87.5, "source": "server", "ttft_ms": 250.0, "total_ms": 500.0,
                 "finish_reason": "length"}
    assert sample_of("cli", timings, tokens_in=40, tokens_out=11, t0=T0, chunk_times=CHUNKS,
                     t_end=T0 + 0.5)["source"] == "tool"
    # vLLM: usage but no timings
    s = sample_of("server", {}, tokens_in=50, tokens_out=11, t0=T0, chunk_times=CHUNKS, t_end=T0 + 0.5)
    assert s["source"] == "client" and s["prompt_tps"] == 200.0 and s["gen_tps"] == pytest.approx(55.56)
    assert s["gen_tokens"] == 11 and s["cached_tokens"] is None
    # only one figure reported by the engine: the other is the client's
    s = sample_of("server", {"predicted_per_second": 87.5}, tokens_in=50, tokens_out=11, t0=T0,
                  chunk_times=CHUNKS, t_end=T0 + 0.5)
    assert s["source"] == "mixed" and s["gen_tps"] == 87.5 and s["prompt_tps"] == 200.0


def test_same_prompts_for_every_mode():
    a = prompts_for(3, 20, tag="x")
    assert len(set(a)) == 3 and a == prompts_for(3, 20, tag="x")
    assert all(p.endswith(a[0].split("\n", 1)[1]) for p in a)


def test_bad_mode_is_a_usage_error(tmp_path):
    r = cli("bench", "sm", "--mode", "gpu", "--json")
    assert r.returncode == 2 and "--mode must be" in r.stderr and r.stdout == ""
