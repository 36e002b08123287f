"""`run`'s pure parts: parameter precedence, `--set`, request and argv building (images
included), routing errors, the output relay of cli mode. No engine is started here; the real
servers and tools are exercised in test_run_engine.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from llmctl.errors import NoServerAvailable, UsageError, describe
from llmctl.inference.params import SAMPLING, SAMPLING_KEYS, merge, parse_set, request_fields, tool_flags
from llmctl.profiles import load

PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def config(tmp_path: Path, model: Path, extra: str = ""):
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"""
profiles:
  light: {{model: {model}, port: 1, ctx_size: 2048, batch_size: 512, ubatch_size: 128, threads: 2}}
  vis: {{model: {model}, port: 2, mmproj: {tmp_path / 'mmproj.gguf'}}}
  vl: {{engine: vllm, model: "hf:org/Model-AWQ", port: 3, served_model_name: served}}
  keyed: {{model: {model}, port: 4, api_key_env: LLMCTL_TEST_PARAMS_KEY}}
tasks:
  summary: {{profile: light, fallback: [vl], temperature: 0.7, max_tokens: 64, system: "Summarize."}}
  remote: {{profile: vl, repeat_penalty: 1.1, mirostat: 2}}
defaults:
  sampling: {{temperature: 0.35, top_p: 0.9, top_k: 40, mirostat: 0}}
{extra}""")
    return load([str(f)])


def test_precedence_defaults_task_command_line(tmp_path, smollm2):
    cfg = config(tmp_path, smollm2)
    p = merge(cfg.defaults.sampling, cfg.tasks["summary"], {"temperature": 0.1, "top_k": None, "seed": 5})
    assert p.sampling == {"temperature": 0.1, "top_p": 0.9, "mirostat": 0, "seed": 5, "max_tokens": 64}
    assert p.origin["temperature"] == "command line" and p.origin["top_p"] == "defaults"
    assert p.origin["max_tokens"] == "task" and p.origin["top_k"] == "command line"  # unset on purpose
    assert p.system == "Summarize."
    assert merge(cfg.defaults.sampling, cfg.tasks["summary"], {"system": ""}).system is None
    # the schema's key order, whatever order the sources give
    assert list(p.sampling) == [k for k in SAMPLING_KEYS if k in p.sampling]


def test_set_values_are_typed_and_checked():
    assert parse_set(["top_k=7", "min_p=0.05", "stop=[\"a\", \"b\"]", "seed=null", "system=Be brief: 1=1"]) == \
        {"top_k": 7, "min_p": 0.05, "stop": ["a", "b"], "seed": None, "system": "Be brief: 1=1"}
    assert parse_set(["stop=END", "max-tokens=3"]) == {"stop": ["END"], "max_tokens": 3}
    with pytest.raises(UsageError, match="did you mean 'top_k'"):
        parse_set(["topk=3"])
    with pytest.raises(UsageError, match="top_k: 'many' is not int"):
        parse_set(["top_k=many"])
    with pytest.raises(UsageError, match="expected key=value"):
        parse_set(["temperature"])
    with pytest.raises(UsageError):
        parse_set(["top_k=1.5"])


def test_every_sampling_key_has_a_request_field_and_a_tool_flag():
    assert set(SAMPLING) == set(SAMPLING_KEYS)
    p = merge(None, None, {k: (["x"] if k == "stop" else 1) for k in SAMPLING_KEYS})
    body, dropped = request_fields(p, "llama-server")
    assert set(body) == set(SAMPLING_KEYS) and dropped == []
    flags = tool_flags(p)
    assert len(flags) == 2 * len(SAMPLING_KEYS)


def test_vllm_spelling(tmp_path, smollm2):
    from llmctl.inference.request import chat_request

    cfg = config(tmp_path, smollm2)
    p = merge(cfg.defaults.sampling, cfg.tasks["remote"])
    req = chat_request(cfg.profiles["vl"], p, "hi")
    assert req.payload["model"] == "served"
    assert req.payload["repetition_penalty"] == 1.1 and "repeat_penalty" not in req.payload
    assert "mirostat" not in req.payload and req.dropped == ["mirostat"]


def test_image_request_building(tmp_path, smollm2):
    """No tiny multimodal model (GGUF + mmproj) is available on these machines, so images are
    tested by the requests built for them: the base64 `image_url` part sent to a server with
    `mmproj:`, and the llama-mtmd-cli argv of cli mode. Text requests run for real elsewhere."""
    from llmctl.inference.cli_runner import cli_command
    from llmctl.inference.request import chat_request

    img = tmp_path / "cat.png"
    img.write_bytes(PNG)
    cfg = config(tmp_path, smollm2)
    p = merge(cfg.defaults.sampling, None, {"max_tokens": 9})
    req = chat_request(cfg.profiles["vis"], p, "What is this?", [str(img)])
    user = req.payload["messages"][-1]
    assert user["role"] == "user"
    text, image = user["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image["type"] == "image_url"
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PNG

    cmd = cli_command(cfg.profiles["vis"], p, "What is this?", [str(img)])
    assert cmd.tool == "llama-mtmd-cli" and Path(cmd.argv[0]).name == "llama-mtmd-cli"
    a = cmd.argv
    assert a[a.index("--mmproj") + 1] == str(tmp_path / "mmproj.gguf")
    assert a[a.index("--image") + 1] == str(img)
    assert a[a.index("-n") + 1] == "9" and a[-2:] == ["-p", "What is this?"]

    with pytest.raises(UsageError, match="no `mmproj:`"):
        cli_command(cfg.profiles["light"], p, "x", [str(img)])
    notimg = tmp_path / "notes.txt"
    notimg.write_text("hello")
    with pytest.raises(UsageError, match="does not look like an image"):
        chat_request(cfg.profiles["vis"], p, "x", [str(notimg)])


def test_routing_errors_name_the_next_command(tmp_path, smollm2):
    from llmctl.inference.router import plan

    cfg = config(tmp_path, smollm2)
    with pytest.raises(NoServerAvailable) as ei:
        plan(cfg, task="summary", mode="server")
    code, msg, hint = describe(ei.value)
    assert code == 11 and "light: stopped, vl: stopped" in msg and hint == "start one with `llmctl up light`"
    # auto, nothing running: cli mode with the task's own profile
    r = plan(cfg, task="summary").routes
    assert [(x.mode, x.profile.name) for x in r] == [("cli", "light")]
    # a vLLM task cannot fall back to cli mode
    with pytest.raises(NoServerAvailable, match="cli mode needs a llama-server profile"):
        plan(cfg, task="remote")
    with pytest.raises(UsageError, match="cli mode needs a llama-server profile"):
        plan(cfg, task="remote", mode="cli")
    with pytest.raises(UsageError, match="--mode 'fast'"):
        plan(cfg, task="summary", mode="fast")
    # images skip profiles without mmproj
    with pytest.raises(NoServerAvailable, match="light cannot read images|no running server"):
        plan(cfg, profile="light", mode="server", images=True)
    assert plan(cfg, profile="vis", images=True).routes[0].mode == "cli"


def test_api_key_is_sent_but_never_shown(tmp_path, smollm2, monkeypatch):
    from llmctl.inference.request import chat_request
    from llmctl.inference.run import dry_run

    cfg = config(tmp_path, smollm2)
    p = merge(None, None)
    monkeypatch.delenv("LLMCTL_TEST_PARAMS_KEY", raising=False)
    with pytest.raises(UsageError, match=r"\$LLMCTL_TEST_PARAMS_KEY"):
        chat_request(cfg.profiles["keyed"], p, "x")
    monkeypatch.setenv("LLMCTL_TEST_PARAMS_KEY", "sk-very-secret")
    req = chat_request(cfg.profiles["keyed"], p, "x")
    assert req.headers["Authorization"] == "Bearer sk-very-secret"
    shown = json.dumps(dry_run("x", profile="keyed", config=cfg))
    assert "sk-very-secret" not in shown and "Bearer ***" in shown


def test_relay_cuts_stops_markers_and_trailing_newlines_across_chunks():
    from llmctl.inference.cli_runner import _Relay

    seen: list[str] = []
    r = _Relay(seen.append, ["7,"], [" [end of text]"])
    for piece in ["1, 2, 3, 4, 5, 6, ", "7", ", 8, 9"]:
        r.feed(piece)
    assert r.finish() == "1, 2, 3, 4, 5, 6, " and "".join(seen) == "1, 2, 3, 4, 5, 6, "

    seen.clear()
    r = _Relay(seen.append, [], [" [end of text]"])
    for piece in ["Hello", "\n", "world.", " [end", " of text]\n\n\n"]:
        r.feed(piece)
    assert r.finish() == "Hello\nworld." and "".join(seen) == "Hello\nworld."

    r = _Relay(None, [], ["\n[ Prompt:"], skip_until="> Say hi\n")
    for piece in ["banner\n\n> Sa", "y hi\nHi there!", "\n\n[ Prompt: 1 t/s ]\n"]:
        r.feed(piece)
    assert r.finish() == "Hi there!"


def test_perf_lines_give_token_counts():
    from llmctl.inference.cli_runner import parse_perf

    log = """common_perf_print:        load time =     207.87 ms
common_perf_print: prompt eval time =      77.41 ms /    24 tokens (    3.23 ms per token,   310.04 tokens per second)
common_perf_print:        eval time =     218.10 ms /    29 runs   (    7.52 ms per token,   132.97 tokens per second)
"""
    perf = parse_perf(log)
    assert perf["prompt_n"] == 24 and perf["predicted_n"] == 30 and perf["load_ms"] == 207.87
    assert perf["prompt_ms"] == 77.41 and perf["predicted_ms"] == 218.10


def test_split_url():
    from llmctl.inference.http import HTTPError, split_url

    assert split_url("http://127.0.0.1:8080/v1/chat/completions") == ("127.0.0.1", 8080, "/v1/chat/completions")
    assert split_url("http://[::1]:9000/health") == ("::1", 9000, "/health")
    assert split_url("http://localhost") == ("localhost", 80, "/")
    with pytest.raises(HTTPError):
        split_url("https://example.com/")
