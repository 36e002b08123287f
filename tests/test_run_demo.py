"""Issue 4's "done when", with the real demo profile (profiles/demo.yaml) through a real shell:
with both servers up, `echo text | llmctl run --task summary` is answered by light; with light
down, by heavy (the task's fallback); with both down, by cli mode; and `--mode server` then fails
with a message naming `llmctl up light`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .util import cli

pytestmark = [pytest.mark.engine]

TEXT = "The quarterly meeting moved from Monday to Tuesday at noon, in room 4, because of the holiday."


def pipeline(env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = f"echo '{TEXT}' | {sys.executable} -m llmctl run --task summary --max-tokens 32 " + " ".join(args)
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=180)


def test_demo_summary_routes_light_then_heavy_then_cli(tmp_path, smollm2, gemma, ports, llama_server):
    for src, name in ((gemma, "gemma3-270m-q4_k_m"), (smollm2, "smollm2-135m-instruct-q4_1")):
        assert cli("import", str(src), "--as", name, "--link").returncode == 0
    demo = (Path(__file__).resolve().parents[1] / "profiles" / "demo.yaml").read_text()
    f = tmp_path / "llmctl.yaml"
    f.write_text(demo.replace("18180", str(ports())).replace("18181", str(ports())))
    env = {"LLMCTL_PROFILES": str(f)}
    r = cli("up", "heavy", "light", env=env)
    assert r.returncode == 0, r.stderr
    try:
        r = pipeline(env)  # plain: the answer on stdout, nothing on stderr
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() and r.stderr == ""
        d = json.loads(pipeline(env, "--json").stdout)
        assert (d["profile"], d["mode"]) == ("light", "server")

        assert cli("down", "light", env=env).returncode == 0
        r = pipeline(env, "--json")
        d = json.loads(r.stdout)
        assert (d["profile"], d["mode"]) == ("heavy", "server") and d["text"].strip()
        assert "light: stopped, heavy: running" in r.stderr
    finally:
        assert cli("down", env=env).returncode == 0
    r = pipeline(env, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["profile"], d["mode"], d["tool"]) == ("light", "cli", "llama-completion") and d["text"].strip()
    r = pipeline(env, "--mode", "server")
    assert r.returncode == 11 and "`llmctl up light`" in r.stderr and r.stdout == ""
