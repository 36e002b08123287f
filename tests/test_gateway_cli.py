"""`llmctl serve` as a user runs it: a subprocess with a key file, the URL on stderr, a server
started on demand, Ctrl-C (exit 130) stopping what the gateway started and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest

from .util import free_port

pytestmark = [pytest.mark.engine]


def test_serve_starts_on_demand_and_ctrl_c_stops_only_what_it_started(tmp_path, smollm2, llama_server):
    from llmctl import Supervisor, load_profiles

    f = tmp_path / "llmctl.yaml"
    f.write_text(f"""
profiles:
  pre: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1}}
  demand: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1}}
tasks:
  chat: {{profile: demand, max_tokens: 3}}
""")
    key = tmp_path / "gateway.key"
    key.write_text("cli-test-key\n")
    key.chmod(0o600)
    sup = Supervisor(load_profiles([str(f)]))
    sup.start(["pre"])  # running before the gateway: it must outlive it
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "-f", str(f), "serve", "--port", str(port),
                             "--api-key-file", str(key)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, LLMCTL_GATEWAY_KEY=""))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 60
        while not any(url in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="not-it", max_retries=0).models.list()
        c = openai.OpenAI(base_url=url, api_key="cli-test-key", max_retries=0, timeout=120)
        answer = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}])
        assert answer.usage.completion_tokens <= 3
        c.chat.completions.create(model="pre", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert {e.name: e.state for e in sup.status()} == {"pre": "running", "demand": "running"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        reader.join(5)
        assert proc.stdout.read() == ""  # stdout stays clean
        assert {e.name: e.state for e in sup.status()} == {"pre": "running", "demand": "stopped"}
        assert any("gateway stopped" in ln for ln in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sup.stop(None)
