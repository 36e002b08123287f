"""The gateway without engines: routing and parameter precedence, security rules, metrics text,
the CLI's refusals, lazy imports, and a real in-process gateway answering what needs no server
(model list, unknown model, bad JSON, keys)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from llmctl.errors import UsageError
from llmctl.gateway.config import GatewayConfig
from llmctl.gateway.metrics import Metrics
from llmctl.gateway.routing import CHAT, COMPLETIONS, EMBEDDINGS, Router, prepare_body
from llmctl.gateway.security import authorized, is_loopback, resolve_key
from llmctl.profiles.loader import load

from .util import cli, free_port

YAML = """
profiles:
  light: {{model: {model}, port: {p1}, alias: tiny-chat}}
  big: {{model: {model}, port: {p2}, engine: vllm, served_model_name: org/big}}
tasks:
  summary: {{profile: light, fallback: [big], temperature: 0.7, max_tokens: 64, repeat_penalty: 1.1,
            system: "Summarize."}}
  light-task: {{profile: big}}
defaults:
  sampling: {{temperature: 0.35, top_k: 40}}
"""


@pytest.fixture
def config(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    f = tmp_path / "llmctl.yaml"
    f.write_text(YAML.format(model=model, p1=free_port(), p2=free_port()))
    return load([str(f)])


def test_router_resolves_tasks_profiles_and_served_names(config):
    r = Router(config)
    t = r.resolve("summary")
    assert t.task.name == "summary" and t.candidates == ["light", "big"]
    assert r.resolve("light").candidates == ["light"] and r.resolve("light").task is None
    assert r.resolve("tiny-chat").candidates == ["light"]  # alias
    assert r.resolve("org/big").candidates == ["big"]  # vLLM served name
    assert r.resolve("light-task").task.name == "light-task"  # a task name wins over a served name
    from llmctl.gateway.errors import BadRequest, UnknownModel

    with pytest.raises(UnknownModel, match="summary"):
        r.resolve("nope")
    with pytest.raises(BadRequest):
        r.resolve(None)  # two profiles, no `default` task


def test_task_parameters_fill_in_and_the_client_wins(config):
    r = Router(config)
    target = r.resolve("summary")
    light, big = config.profiles["light"], config.profiles["big"]
    body = {"model": "summary", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}
    out = prepare_body(CHAT, body, target, light)
    assert out["temperature"] == 0.1  # sent by the client
    assert out["max_tokens"] == 64 and out["top_k"] == 40 and out["repeat_penalty"] == 1.1  # task, defaults
    assert out["messages"][0] == {"role": "system", "content": "Summarize."}
    assert out["model"] == "tiny-chat"  # the name the server answers to
    assert body["messages"][0]["role"] == "user"  # the client's body is not modified
    own_system = dict(body, messages=[{"role": "system", "content": "Mine."}, {"role": "user", "content": "x"}],
                      max_completion_tokens=5)
    out = prepare_body(CHAT, own_system, target, light)
    assert out["messages"][0]["content"] == "Mine." and len(out["messages"]) == 2
    assert "max_tokens" not in out
    out = prepare_body(COMPLETIONS, {"model": "summary", "prompt": "x", "top_k": None}, target, big)
    assert out["model"] == "org/big" and out["repetition_penalty"] == 1.1 and out["top_k"] is None
    assert "messages" not in out
    emb = prepare_body(EMBEDDINGS, {"model": "light", "input": "x"}, r.resolve("light"), light)
    assert emb == {"model": "tiny-chat", "input": "x"}


def test_binding_beyond_loopback_needs_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMCTL_GATEWAY_KEY", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert resolve_key("127.0.0.1") is None
    with pytest.raises(UsageError, match="API key"):
        resolve_key("0.0.0.0")
    assert resolve_key("0.0.0.0", env={"LLMCTL_GATEWAY_KEY": "k1"}) == "k1"
    f = tmp_path / "key"
    f.write_text("secret-key\n")
    f.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        resolve_key("0.0.0.0", f)
    f.chmod(0o600)
    assert resolve_key("0.0.0.0", f) == "secret-key"
    from llmctl.gateway.app import build_app
    from llmctl.profiles.schema import Config

    with pytest.raises(UsageError):
        build_app(Config(), GatewayConfig(host="0.0.0.0"))


def test_key_check():
    assert authorized([(b"authorization", b"Bearer s3cret")], "s3cret")
    assert authorized([(b"authorization", b"bearer s3cret")], "s3cret")
    assert not authorized([(b"authorization", b"Bearer s3cre")], "s3cret")
    assert not authorized([(b"authorization", b"s3cret")], "s3cret")
    assert not authorized([], "s3cret")


def test_metrics_text():
    m = Metrics()
    m.request("light", CHAT, 200, 0.02)
    m.request("light", CHAT, 200, 3.0)
    m.request(None, CHAT, 404, 0.001)
    m.usage("light", 10, 5)
    m.start_result("light", True, 1.5)
    m.stopped("light", "idle")
    text = m.render([{"name": "light", "state": "running", "inflight": 1, "waiting": 0}])
    lines = text.splitlines()
    assert 'llmctl_gateway_requests_total{profile="light",endpoint="/v1/chat/completions",code="200"} 2' in lines
    assert 'llmctl_gateway_requests_total{profile="",endpoint="/v1/chat/completions",code="404"} 1' in lines
    buckets = 'llmctl_gateway_request_duration_seconds_bucket{profile="light",endpoint="/v1/chat/completions"'
    assert buckets + ',le="0.025"} 1' in lines
    assert buckets + ',le="+Inf"} 2' in lines
    assert 'llmctl_gateway_tokens_total{profile="light",kind="completion"} 5' in lines
    assert 'llmctl_gateway_starts_total{profile="light",outcome="ok"} 1' in lines
    assert 'llmctl_gateway_stops_total{profile="light",reason="idle"} 1' in lines
    assert 'llmctl_gateway_up{profile="light"} 1' in lines
    for line in lines:  # every sample line: name{labels} value
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_cli_import_stays_light():
    code = ("import sys, llmctl.cli.app, llmctl.cli.serve_cmd, llmctl.gateway;"
            "print(sorted(m for m in ('starlette', 'uvicorn', 'httpx', 'gguf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_refuses_to_bind_beyond_loopback_without_a_key(config):
    env = {"LLMCTL_GATEWAY_KEY": ""}
    r = cli("-f", config.files[0], "serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env, timeout=60)
    assert r.returncode == 2
    assert "API key" in r.stderr and "LLMCTL_GATEWAY_KEY" in r.stderr
    r = cli("serve", "--help", timeout=60)
    assert r.returncode == 0 and "--stop-on-exit" in r.stdout and "--vram-budget" in r.stdout


def test_gateway_answers_what_needs_no_server(config):
    """A real gateway in this process; nothing is started (no request reaches a profile)."""
    from openai import NotFoundError, OpenAI

    from llmctl.gateway import start_in_thread

    gw = start_in_thread(config, GatewayConfig(port=0, api_key="gw-key", refresh_interval=0))
    try:
        client = OpenAI(base_url=gw.url + "/v1", api_key="gw-key", max_retries=0)
        models = {m.id: m for m in client.models.list().data}
        assert set(models) == {"summary", "light-task", "light", "big"}
        assert models["summary"].model_extra["llmctl"] == {"kind": "task", "profile": "light", "fallback": ["big"],
                                                           "state": "stopped", "description": ""}
        assert models["light"].model_extra["llmctl"]["state"] == "stopped"
        with pytest.raises(NotFoundError, match="no task, profile or served model named 'gpt-4'"):
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
        r = httpx.post(gw.url + "/v1/chat/completions", content=b"{not json",
                       headers={"authorization": "Bearer gw-key", "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "light"},
                       headers={"authorization": "Bearer gw-key"})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
        assert httpx.get(gw.url + "/health").json() == {"status": "ok"}  # no key needed
        for headers in ({}, {"authorization": "Bearer wrong"}):
            r = httpx.get(gw.url + "/v1/models", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(gw.url + "/metrics").status_code == 401
        text = httpx.get(gw.url + "/metrics", headers={"authorization": "Bearer gw-key"}).text
        assert 'llmctl_gateway_requests_total{profile="",endpoint="/v1/chat/completions",code="404"} 1' in text
    finally:
        gw.stop()
    assert not gw.thread.is_alive()
