"""`profiles list/show/validate`, `up --timeout` and `logs -f` through the real CLI. The
servers here are the purpose-built misbehaving test server (tests/helpers/misbehaving_server.py),
whose readiness can be delayed on cue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from .util import cli, wait_for

HELPER = str(Path(__file__).parent / "helpers" / "misbehaving_server.py")


def write(tmp_path: Path, text: str) -> dict:
    f = tmp_path / "llmctl.yaml"
    f.write_text(text)
    return {"LLMCTL_PROFILES": str(f)}


def test_list_show_validate(tmp_path, smollm2):
    env = write(tmp_path, f"profiles:\n"
                          f"  light: {{model: {smollm2}, port: 18801, threads: 2}}\n"
                          f"  heavy: {{model: missing.gguf, port: 18802}}\n"
                          f"tasks:\n  summary: {{profile: light, fallback: [heavy]}}\n")
    r = cli("profiles", "list", env=env)
    assert r.returncode == 0
    assert "light" in r.stdout and "http://127.0.0.1:18801" in r.stdout and "summary  light    heavy" in r.stdout

    r = cli("profiles", "show", "light", "--json", env=env)
    d = json.loads(r.stdout)
    assert d["threads"] == 2 and d["host"] == "127.0.0.1" and d["engine"] == "llama-server"  # defaults filled in
    assert d["start_timeout"] > 0 and d["ctx_size"] is None
    assert d["model_path"] == str(smollm2) and d["model_missing"] is None
    assert d["source"].endswith("llmctl.yaml:2")
    text = cli("profiles", "show", "heavy", env=env).stdout
    assert "# model: profile 'heavy': model file" in text and "missing.gguf does not exist" in text
    assert "\nheavy:\n  model: missing.gguf\n" in text

    r = cli("profiles", "show", "nosuch", env=env)
    assert r.returncode != 0 and "nosuch" in r.stderr and "light" in r.stderr
    r = cli("profiles", "validate", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["profiles"] == 2
    (tmp_path / "llmctl.yaml").write_text("profiles:\n  light: {model: x.gguf, port: 18801, gpu_layer: 3}\n")
    r = cli("profiles", "validate", env=env)
    assert r.returncode == 4 and "llmctl.yaml:2" in r.stderr and "gpu_layers" in r.stderr


def test_up_timeout_overrides_start_timeout_and_logs_follow(tmp_path, ports):
    port = ports()
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    env = write(tmp_path, f"profiles:\n  slow: {{model: {model}, port: {port}, binary: {HELPER}, "
                          f"env: {{MISBEHAVE: '--ready-after 30'}}, start_timeout: 600, stop_timeout: 2}}\n")
    t0 = time.monotonic()
    r = cli("up", "slow", "--timeout", "1.5", env=env)
    assert r.returncode == 9 and "start timeout" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 20
    assert cli("status", "slow", "--json", env=env).returncode == 3

    follow = subprocess.Popen([sys.executable, "-m", "llmctl", "logs", "slow", "-f", "-n", "0"],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        log = str(Path(os.environ["LLMCTL_HOME"]) / "logs" / "slow.log")
        wait_for(lambda: log in (f.path for f in psutil.Process(follow.pid).open_files()), what="logs -f")
        (tmp_path / "llmctl.yaml").write_text((tmp_path / "llmctl.yaml").read_text().replace("30", "0"))
        assert cli("up", "slow", env=env).returncode == 0
        deadline = time.monotonic() + 20
        while not any("healthy after" in ln for ln in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("healthy after" in ln for ln in seen), seen
        assert not any("start timeout" in ln for ln in seen)  # -n 0: only what came after
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)
        cli("down", "slow", env=env)
