"""Ollama's API on the gateway.

First the translation itself (llmctl/gateway/ollama*.py are pure: dicts and bytes in and out),
then the official `ollama` Python client against a real `llmctl serve` (a subprocess, as a user
runs it, with a key and `--ollama-port`) in front of real tiny llama-servers (SmolLM2: a chat
profile with one slot, so that its /slots shows the last request's parameters, and an
embeddings profile), started on demand by the gateway; and a pull from the olah Hub mirror
(tests/hub_mirror.py). One gateway serves the module and stops what it started at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import ollama
import pytest

from llmctl.gateway.errors import BadRequest
from llmctl.gateway.ollama import (
    chat_messages,
    chat_request,
    check_num_ctx,
    generate_request,
    keep_alive,
    loads_only,
    map_options,
)
from llmctl.gateway.ollama_pull import NdjsonProgress, reference
from llmctl.gateway.ollama_reply import StreamTranslator, reply

from .hub_mirror import HubMirror, find_olah, write_gguf
from .util import cli, free_port, wait_for

KEY = "gw-" + os.urandom(6).hex()
IN_TERMINAL = str(Path(__file__).parent / "helpers" / "llmctl_in_terminal.py")
HI = [{"role": "user", "content": "Hi"}]
STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]
TINY_REPO = "test-org/tiny-GGUF"
TINY_FILE = "tiny-Q8_0.gguf"


# -- the translation (pure) --------------------------------------------------------------------
EVERY_OPTION = {"num_predict": 7, "temperature": 0.3, "top_k": 7, "top_p": 0.5, "min_p": 0.07, "seed": 42,
                "stop": ["\n\n"], "repeat_penalty": 1.2, "presence_penalty": 0.1, "frequency_penalty": 0.2,
                "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "typical_p": 0.9, "repeat_last_n": 33,
                "num_keep": 5, "num_ctx": 2048, "num_gpu": 99, "num_thread": 4, "tfs_z": 1.0, "penalize_newline": True}


def test_options_are_spelled_for_each_engine():
    llama, ignored = map_options(EVERY_OPTION, "llama-server")
    assert llama == {"max_tokens": 7, "temperature": 0.3, "top_k": 7, "top_p": 0.5, "min_p": 0.07, "seed": 42,
                     "stop": ["\n\n"], "repeat_penalty": 1.2, "presence_penalty": 0.1, "frequency_penalty": 0.2,
                     "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "typical_p": 0.9,
                     "repeat_last_n": 33, "n_keep": 5}
    assert set(ignored) == {"num_ctx", "num_gpu", "num_thread", "tfs_z", "penalize_newline"}
    vllm, ignored = map_options(EVERY_OPTION, "vllm")
    assert vllm["repetition_penalty"] == 1.2 and "repeat_penalty" not in vllm
    assert set(ignored) >= {"mirostat", "mirostat_tau", "mirostat_eta", "typical_p", "repeat_last_n", "num_keep"}
    assert map_options({"num_predict": -1}, "llama-server")[0] == {"max_tokens": None}  # no limit, not the task's
    assert map_options({"stop": "END"}, "llama-server")[0] == {"stop": ["END"]}
    assert map_options(None, "vllm") == ({}, [])


@pytest.mark.parametrize("options", [{"temperature": "hot"}, {"num_predict": "many"}, {"top_k": True},
                                     {"typical_p": "x"}, {"stop": [1]}, ["temperature"]])
def test_options_of_the_wrong_type_are_refused(options):
    with pytest.raises(BadRequest):
        map_options(options, "llama-server")


def test_num_ctx_beyond_the_profiles_context_is_refused(tmp_path):
    from llmctl import load_profiles

    f = tmp_path / "p.yaml"
    f.write_text("profiles:\n  p: {model: x.gguf, port: 18999, ctx_size: 1024}\n  q: {model: x.gguf, port: 18998}\n")
    config = load_profiles([str(f)])
    check_num_ctx({"num_ctx": 1024}, config.profiles["p"])
    check_num_ctx({"num_ctx": 10**6}, config.profiles["q"])  # no ctx_size: the model's, not known here
    with pytest.raises(BadRequest) as err:
        check_num_ctx({"num_ctx": 4096}, config.profiles["p"])
    assert "ctx_size: 1024" in err.value.message and f"{f}:2" in err.value.message
    with pytest.raises(BadRequest):
        check_num_ctx({"num_ctx": "big"}, config.profiles["p"])


@pytest.mark.parametrize("value, seconds", [(300, 300.0), ("300", 300.0), ("5m", 300.0), ("1h30m", 5400.0),
                                            ("1.5s", 1.5), ("250ms", 0.25), (0, 0.0), ("0", 0.0), ("0s", 0.0),
                                            (-1, None), ("-1m", None), ("-1", None)])
def test_keep_alive_durations(value, seconds):
    assert keep_alive({"keep_alive": value}).seconds == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m", "", True, [5]])
def test_keep_alive_that_is_no_duration_is_refused(value):
    with pytest.raises(BadRequest):
        keep_alive({"keep_alive": value})
    assert keep_alive({}) is None


def test_chat_messages_images_and_tool_calls():
    msgs = chat_messages([
        {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo="]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "look", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "a cat", "tool_name": "look"},
    ])
    assert msgs[0]["content"] == [{"type": "text", "text": "What is this?"},
                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    call = msgs[1]["tool_calls"][0]
    assert call["type"] == "function" and json.loads(call["function"]["arguments"]) == {"x": 1}
    assert msgs[2] == {"role": "tool", "content": "a cat", "tool_call_id": call["id"]}
    for bad in ("hi", [{"content": "no role"}], [{"role": "user", "content": 5}]):
        with pytest.raises(BadRequest):
            chat_messages(bad)


def test_requests_become_chat_or_completions():
    up = chat_request({"model": "m", "messages": HI, "format": "json", "think": False, "tools": [{"type": "function"}]})
    assert up.endpoint == "/v1/chat/completions" and up.stream  # Ollama streams unless told not to
    assert up.body["stream_options"] == {"include_usage": True}
    assert up.body["response_format"] == {"type": "json_object"}
    assert up.body["chat_template_kwargs"] == {"enable_thinking": False} and up.body["tools"]
    up = generate_request({"prompt": "Once", "system": "Be brief.", "stream": False, "format": {"type": "object"},
                           "context": [1, 2]})
    assert up.endpoint == "/v1/chat/completions" and not up.stream and up.ignored == ["context"]
    assert up.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Once"}]
    assert up.body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    raw = generate_request({"prompt": "Once upon", "raw": True, "system": "ignored"})
    assert raw.endpoint == "/v1/completions" and raw.body["prompt"] == "Once upon" and raw.ignored == ["system"]
    assert loads_only(chat_request({"messages": []})) and loads_only(generate_request({}))
    assert not loads_only(generate_request({"prompt": "x"}))


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)


def call(**function: str) -> dict:
    """A fragment of a streamed tool call (the first names the function)."""
    return {"index": 0, "function": function}


def test_a_stream_is_translated_however_it_is_split():
    """Chunks with text, tool-call fragments, the finish reason and the counts; fed whole and
    one byte at a time, the same NDJSON lines come out."""
    stream = sse({"choices": [{"delta": {"role": "assistant", "content": None}}]},
                 {"choices": [{"delta": {"content": "Hel"}}]},
                 {"choices": [{"delta": {"content": "lo"}}]},
                 {"choices": [{"delta": {"tool_calls": [call(name="f", arguments='{"a"')]}}]},
                 {"choices": [{"delta": {"tool_calls": [call(arguments=": 1}")]}}]},
                 {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
                 {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4},
                  "timings": {"prompt_ms": 2.5, "predicted_ms": 10.0}},
                 "[DONE]")

    def run(pieces: list[bytes]) -> list[dict]:
        t = StreamTranslator("chat", "light", wall=lambda: 100.0, started=99.0)
        out = b"".join(t.feed(p) for p in pieces) + t.end()
        return [json.loads(line) for line in out.splitlines()]

    whole = run([stream])
    assert whole == run([stream[i:i + 1] for i in range(len(stream))])
    assert [line["message"]["content"] for line in whole] == ["Hel", "lo", ""]
    last = whole[-1]
    assert last["done"] and last["done_reason"] == "stop" and last["model"] == "light"
    assert last["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 1}}}]
    assert (last["prompt_eval_count"], last["eval_count"]) == (9, 4)
    durations = (last["prompt_eval_duration"], last["eval_duration"], last["total_duration"])
    assert durations == (2_500_000, 10_000_000, 1_000_000_000)
    created = datetime.fromisoformat(last["created_at"].replace("Z", "+00:00"))
    assert created == datetime.fromtimestamp(100, timezone.utc)


def test_a_broken_stream_ends_with_an_error_line():
    t = StreamTranslator("generate", "m", wall=lambda: 0.0, started=0.0)
    out = t.feed(sse({"choices": [{"text": "Once"}]}, {"error": {"message": "m: the server stopped", "code": 502}}))
    out += t.feed(sse({"choices": [{"text": "ignored"}]})) + t.end()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"model": "m", "created_at": "1970-01-01T00:00:00.000000Z", "response": "Once", "done": False},
        {"error": "m: the server stopped"}]


def test_whole_answers():
    answer = {"choices": [{"message": {"content": "", "reasoning_content": "hmm", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 2}"}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    out = reply("chat", answer, "m", "now", 5)
    assert out["message"] == {"role": "assistant", "content": "", "thinking": "hmm",
                              "tool_calls": [{"function": {"name": "f", "arguments": {"a": 2}}}]}
    assert (out["done"], out["done_reason"], out["eval_count"], out["total_duration"]) == (True, "stop", 2, 5)
    text = reply("generate", {"choices": [{"text": "Once", "finish_reason": "length"}]}, "m", "now", 5)
    assert (text["response"], text["done_reason"]) == ("Once", "length")
    vectors = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
               "usage": {"prompt_tokens": 4}}
    assert reply("embed", vectors, "m", "now", 5)["embeddings"] == [[1.0], [2.0]]
    assert reply("embeddings", vectors, "m", "now", 5) == {"embedding": [1.0]}


def test_pull_names_and_progress_lines():
    models = {"light": "smollm-test:Q4_1", "local": "/models/x.gguf", "summary": "smollm-test:Q4_1"}
    pullable = lambda ref: not ref.startswith("/")  # noqa: E731
    assert reference("light", models, pullable) == "smollm-test:Q4_1"
    assert reference("summary:latest", models, pullable) == "smollm-test:Q4_1"
    assert reference("local", models, pullable) is None  # a file: nothing to pull
    assert reference("hf.co/org/repo-GGUF:Q4_K_M", models, pullable) == "hf:org/repo-GGUF:Q4_K_M"
    assert reference("https://huggingface.co/org/repo-GGUF", models, pullable) == "hf:org/repo-GGUF"
    assert reference("qwen2.5-7b:Q5_K_M", models, pullable) == "qwen2.5-7b:Q5_K_M"
    now = [0.0]
    lines: list[dict] = []
    p = NdjsonProgress(lines.append, every=1.0, clock=lambda: now[0])
    p.begin("x (org/repo@abc)", 1, 100, 100)
    p.file_start("a.gguf", 100, 10)
    p.advance("a.gguf", 20)  # within a second of the last line: not shown
    now[0] = 1.5
    p.advance("a.gguf", 30)
    p.file_end("a.gguf", "verified by sha256")
    assert lines[0] == {"status": "pulling manifest"}
    assert [(x["completed"], x["total"]) for x in lines[1:]] == [(10, 100), (60, 100), (100, 100)]
    assert {x["digest"] for x in lines[1:]} == {lines[1]["digest"]} and lines[1]["digest"].startswith("sha256:")
    assert len(lines[1]["digest"]) == len("sha256:") + 64 and lines[1]["status"] == "pulling a.gguf"


# -- the official client against a real `llmctl serve` -----------------------------------------
class Served:
    def __init__(self, proc: subprocess.Popen, lines: list[str], url: str, ollama_url: str, home: Path,
                 profiles: Path) -> None:
        self.proc, self.lines, self.url, self.ollama_url = proc, lines, url, ollama_url
        self.home, self.profiles = home, profiles

    def client(self, **kw) -> ollama.Client:
        kw.setdefault("headers", {"Authorization": f"Bearer {KEY}"})
        return ollama.Client(host=self.ollama_url, timeout=120, **kw)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"authorization": f"Bearer {KEY}"}, timeout=60)

    def post(self, path: str, body: dict, **headers: str) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=120,
                          headers={"authorization": f"Bearer {KEY}", **headers})

    def state(self, name: str) -> str:
        from llmctl import Supervisor, load_profiles
        from llmctl.paths import Paths

        h = self.home
        paths = Paths(h / "state", h / "run", h / "logs", h / "models", h / "config")  # the gateway's LLMCTL_HOME
        return Supervisor(load_profiles([str(self.profiles)]), paths).status([name])[0].state

    def last_request(self, profile: str) -> dict:
        """What the profile's llama-server last received, from its /slots (one slot)."""
        [slot] = self.get(f"/upstream/{profile}/slots").json()
        return slot["params"]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    olah = find_olah()
    if not olah:
        pytest.fail("olah is missing: python -m venv .venv-olah && .venv-olah/bin/pip install olah")
    root = tmp_path_factory.mktemp("ollama-hub")
    m = HubMirror(root, olah)
    m.add_repo(TINY_REPO, {TINY_FILE: write_gguf(root / "tiny.gguf", n=64 * 12288, name="tiny q8")})
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm2, llama_server, mirror):
    root = tmp_path_factory.mktemp("gateway-ollama")
    home = root / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "catalog.yaml").write_text(f"tiny-test: {{repo: {TINY_REPO}, quant: Q8_0}}\n")
    f = root / "llmctl.yaml"
    f.write_text(f"""
profiles:
  light: {{model: {smollm2}, port: {free_port()}, ctx_size: 1024, parallel: 1, threads: 2}}
  embed: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1, embeddings: true,
           args: {{pooling: mean}}}}
  pulled: {{model: tiny-test, port: {free_port()}}}
tasks:
  summary: {{profile: light, temperature: 0, max_tokens: 5, system: "Answer in one short sentence."}}
""")
    port, oport = free_port(), free_port()
    env = dict(os.environ, LLMCTL_HOME=str(home), XDG_CONFIG_HOME=str(root / "xdg"), LLMCTL_GATEWAY_KEY=KEY,
               HF_ENDPOINT=mirror.url, HF_TOKEN="")
    proc = subprocess.Popen([sys.executable, IN_TERMINAL, "-f", str(f), "serve", "--port", str(port),
                             "--ollama-port", str(oport)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or any(url + "/v1" in ln for ln in lines), 60, "the gateway's URL")
        assert proc.poll() is None, "".join(lines)
        yield Served(proc, lines, url, f"http://127.0.0.1:{oport}", home, f)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stops the servers it started
        assert proc.wait(90) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        cli("-f", str(f), "down", "--all", env={"LLMCTL_HOME": str(home)})


@pytest.mark.engine
def test_list_show_and_version(gw, smollm2):
    """Profiles and tasks with their model file's size and facts, on both ports; the names a
    client may use (a profile, a task, with :latest); an unknown name is a 404."""
    c = gw.client()
    assert any(f"OLLAMA_HOST={gw.ollama_url}" in ln for ln in gw.lines), gw.lines
    models = {m.model: m for m in c.list().models}
    assert set(models) == {"light", "embed", "pulled", "summary"}
    for name in ("light", "embed", "summary"):
        m = models[name]
        assert m.size == smollm2.stat().st_size and m.details.format == "gguf"
        assert (m.details.family, m.details.quantization_level) == ("llama", "Q4_1")
    assert models["pulled"].size == 0  # not pulled yet
    assert models["summary"].digest != models["light"].digest
    on_main_port = gw.get("/api/tags").json()
    assert [m["size"] for m in on_main_port["models"]] == [models[m["name"]].size for m in on_main_port["models"]]
    shown = c.show("summary:latest")
    assert shown.capabilities == ["completion"] and shown.modelinfo["llama.context_length"] == 8192
    assert "temperature 0" in shown.parameters and "num_predict 5" in shown.parameters
    assert "num_ctx 1024" in shown.parameters and 'SYSTEM """Answer in one short sentence."""' in shown.modelfile
    assert c.show("embed").capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as err:
        c.show("gpt-4o")
    assert err.value.status_code == 404 and "'gpt-4o' not found" in err.value.error
    assert gw.get("/api/version").json() == {"version": "0.9.0"}
    assert httpx.get(gw.ollama_url + "/", headers={"authorization": f"Bearer {KEY}"}).text == "Ollama is running"


@pytest.mark.engine
def test_chat_plain_and_streamed(gw):
    """Started on demand; the streamed pieces make the same greedy answer as the plain one,
    and the last line carries the counts."""
    c = gw.client()
    opts = {"temperature": 0, "num_predict": 6}
    plain = c.chat(model="light", messages=HI, options=opts, stream=False)
    assert plain.done and plain.message.role == "assistant" and plain.message.content
    assert plain.eval_count == 6 and plain.done_reason == "length" and plain.prompt_eval_count > 0
    parts = list(c.chat(model="light", messages=HI, options=opts, stream=True))
    assert len(parts) > 2 and not any(p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == plain.message.content
    assert parts[-1].eval_count == 6 and parts[-1].eval_duration > 0
    raw = gw.post("/api/chat", {"model": "light", "messages": HI, "options": opts})
    assert raw.headers["content-type"] == "application/x-ndjson" and raw.headers["x-llmctl-profile"] == "light"


@pytest.mark.engine
def test_generate_with_a_tasks_parameters_and_raw(gw):
    c = gw.client()
    by_task = c.generate(model="summary", prompt=STORY[0]["content"])
    assert by_task.response and by_task.eval_count <= 5  # the task's max_tokens
    mine = c.generate(model="summary", prompt=STORY[0]["content"], options={"num_predict": 2})
    assert mine.eval_count == 2  # the client's option wins
    greedy = {"num_predict": 3, "temperature": 0}
    raw = c.generate(model="light", prompt="Once upon a time", raw=True, options=greedy)
    assert raw.response and raw.eval_count == 3
    streamed = list(c.generate(model="light", prompt="Once upon a time", raw=True, options=greedy, stream=True))
    assert streamed[-1].done and "".join(p.response for p in streamed) == raw.response


@pytest.mark.engine
def test_options_reach_llama_server(gw):
    """Ollama's option names arrive at llama-server under its own (its /slots shows the last
    request); a stop string ends the answer; num_ctx is a server setting: more than the
    profile's ctx_size is refused, less is answered and named as not applied."""
    c = gw.client()
    opts = {"temperature": 0.3, "top_k": 7, "top_p": 0.5, "min_p": 0.07, "seed": 42, "repeat_penalty": 1.2,
            "typical_p": 0.9, "repeat_last_n": 33, "num_keep": 5, "num_predict": 3}
    assert c.chat(model="light", messages=HI, options=opts).eval_count == 3
    got = gw.last_request("light")
    for ours, theirs in (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"), ("min_p", "min_p"),
                         ("seed", "seed"), ("repeat_penalty", "repeat_penalty"), ("typical_p", "typical_p"),
                         ("repeat_last_n", "repeat_last_n"), ("num_keep", "n_keep"), ("num_predict", "n_predict")):
        assert got[theirs] == pytest.approx(opts[ours], rel=1e-6), theirs
    text = c.chat(model="light", messages=STORY, options={"temperature": 0, "num_predict": 12}).message.content
    stop = text.split()[3]
    cut = c.chat(model="light", messages=STORY, options={"temperature": 0, "num_predict": 12, "stop": [stop]})
    assert cut.done_reason == "stop" and stop not in cut.message.content and text.startswith(cut.message.content)
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="light", messages=HI, options={"num_ctx": 4096})
    assert err.value.status_code == 400 and "ctx_size: 1024" in err.value.error
    r = gw.post("/api/chat", {"model": "light", "messages": HI, "stream": False,
                              "options": {"num_ctx": 512, "num_gpu": 1, "num_predict": 1}})
    assert r.status_code == 200 and r.headers["x-llmctl-ignored"] == "num_ctx, num_gpu"


@pytest.mark.engine
def test_embed(gw):
    c = gw.client()
    e = c.embed(model="embed", input=["hello", "world"])
    assert [len(v) for v in e.embeddings] == [576, 576] and e.prompt_eval_count > 0  # SmolLM2's width
    assert e.embeddings[0] != e.embeddings[1]
    assert c.embed(model="embed", input="hello").embeddings == [e.embeddings[0]]
    assert c.embeddings(model="embed", prompt="hello").embedding == pytest.approx(e.embeddings[0], rel=1e-4)


@pytest.mark.engine
def test_key_host_and_content_type_checks_apply(gw):
    with pytest.raises(ollama.ResponseError) as err:
        gw.client(headers={}).list()
    assert err.value.status_code == 401
    assert gw.post("/api/chat", {"model": "light", "messages": HI}, host="evil.example").status_code == 403
    r = httpx.post(gw.url + "/api/generate", content=b'{"model": "light"}', timeout=30,
                   headers={"authorization": f"Bearer {KEY}", "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


@pytest.mark.engine
@pytest.mark.slow
def test_pull_from_the_hub_with_progress(gw, mirror):
    """A profile's model (a catalog alias) pulled by the profile's name, with progress lines; the
    list then shows its size; Ollama's hf.co/ORG/REPO:QUANT spelling; an unknown name is a 404."""
    c = gw.client()
    lines = list(c.pull("pulled", stream=True))
    size = mirror.sizes[(TINY_REPO, TINY_FILE)]
    assert lines[0].status == "pulling manifest" and lines[-1].status == "success"
    files = [x for x in lines if x.digest]
    assert files and files[0].status == f"pulling {TINY_FILE}" and files[-1].completed == files[-1].total == size
    assert all(x.digest == files[0].digest and x.digest.startswith("sha256:") for x in files)
    assert {m.model: m.size for m in c.list().models}["pulled"] == size
    assert c.pull(f"hf.co/{TINY_REPO}:Q8_0").status == "success"
    assert [x.status for x in c.pull("pulled", stream=True)][-1] == "success"  # again: nothing to fetch
    with pytest.raises(ollama.ResponseError) as err:
        c.pull("no-such-model")
    assert err.value.status_code == 404


@pytest.mark.engine
def test_ps_keep_alive_load_and_unload(gw):
    """keep_alive sets the idle TTL of the model's server (/api/ps shows when it ends); 0
    stops it once the answer is given; a request without a prompt loads or unloads."""
    c = gw.client()
    c.chat(model="light", messages=HI, options={"num_predict": 1}, keep_alive="1h")
    [entry] = [m for m in c.ps().models if m.model == "light"]
    left = (entry.expires_at - datetime.now(timezone.utc)).total_seconds()
    assert 3500 < left <= 3600 and entry.context_length == 1024 and entry.size > 0
    c.chat(model="light", messages=HI, options={"num_predict": 1})  # without: the profile's own (none)
    [entry] = [m for m in c.ps().models if m.model == "light"]
    assert entry.expires_at.year == 9999
    answer = c.chat(model="summary", messages=HI, keep_alive=0)  # the task's profile: light
    assert answer.message.content
    wait_for(lambda: gw.state("light") == "stopped", 30, "light to be stopped")
    assert "light" not in [m.model for m in c.ps().models]
    loaded = c.generate(model="light")  # no prompt: load
    assert loaded.done_reason == "load" and gw.state("light") == "running"
    unloaded = c.generate(model="light", keep_alive=0)
    assert unloaded.done_reason == "unload" and gw.state("light") == "stopped"
    t0 = time.monotonic()
    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="light", messages=HI, keep_alive="soon")
    assert err.value.status_code == 400 and time.monotonic() - t0 < 5 and gw.state("light") == "stopped"
