"""`llmctl tasks list`: every task with its route, effective parameters and where it would run now.
(With a running server: test_run_engine.py::test_tasks_list_shows_the_live_route.)"""

from __future__ import annotations

import json

from .util import cli, free_port


def test_tasks_list_json_and_table(tmp_path, smollm2):
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"""
profiles:
  light: {{model: {smollm2}, port: {free_port()}}}
  heavy: {{model: {smollm2}, port: {free_port()}}}
  vl: {{engine: vllm, model: "hf:org/m", port: {free_port()}}}
tasks:
  summary: {{profile: light, fallback: [heavy], temperature: 0.7, max_tokens: 64, system: "Summarize.",
             description: "short summaries"}}
  remote: {{profile: vl}}
defaults:
  sampling: {{temperature: 0.35, top_k: 40}}
""")
    env = {"LLMCTL_PROFILES": str(f)}
    r = cli("tasks", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = {t["name"]: t for t in json.loads(r.stdout)}
    s = rows["summary"]
    assert (s["profile"], s["fallback"], s["system"], s["description"]) == ("light", ["heavy"], "Summarize.",
                                                                           "short summaries")
    assert s["sampling"] == {"temperature": 0.7, "top_k": 40, "max_tokens": 64}  # defaults < task
    assert s["route"] == {"mode": "cli", "profile": "light"}  # nothing runs: cli mode
    assert rows["remote"]["route"] is None  # vLLM: no cli mode
    assert s["source"].endswith("llmctl.yaml:7")
    r = cli("tasks", "list", env=env)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["TASK", "PROFILE", "FALLBACK", "NOW"]
    assert any(ln.startswith("summary") and "light (cli)" in ln and "max_tokens=64" in ln for ln in lines)
    assert any(ln.startswith("remote") and " - " in ln for ln in lines)


def test_tasks_list_without_tasks(tmp_path, smollm2):
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {free_port()}}}\n")
    r = cli("tasks", "list", env={"LLMCTL_PROFILES": str(f)})
    assert r.returncode == 0 and r.stdout == "" and "no tasks defined" in r.stderr
    assert json.loads(cli("tasks", "list", "--json", env={"LLMCTL_PROFILES": str(f)}).stdout) == []
