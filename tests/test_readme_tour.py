"""The README's five-minute tour, run as written: its code block is read from README.md and run
line by line by bash in the repository (after the demo models are in the store, as
`scripts/demo.sh` leaves them), with the demo profile's own ports. Every line must succeed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from .util import cli, port_is_free

pytestmark = [pytest.mark.engine]

REPO = Path(__file__).resolve().parents[1]


def tour() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"## Five-minute tour\n\n```sh\n(.*?)```", text, re.S)
    assert m, "README.md has no Five-minute tour code block"
    return m.group(1)


def test_the_readme_tour_runs_as_written(smollm2, gemma, llama_server):
    demo = REPO / "profiles" / "demo.yaml"
    ports = [int(p) for p in re.findall(r"port: (\d+)", demo.read_text())]
    if not all(port_is_free(p) for p in ports):
        pytest.fail(f"the demo's ports {ports} are in use here; "
                    "stop what holds them (`llmctl -f profiles/demo.yaml down`?)")
    for src, name in ((gemma, "gemma3-270m-q4_k_m"), (smollm2, "smollm2-135m-instruct-q4_1")):
        assert cli("import", str(src), "--as", name, "--link").returncode == 0
    lines = [ln for ln in tour().splitlines() if ln.strip()]
    assert lines[0].startswith(". .venv/bin/activate") and lines[-1].startswith("llmctl down")
    script = "set -e\nset -o pipefail\n" + "\n".join(f"echo '>>> {i}'\n{ln}" for i, ln in enumerate(lines))
    try:
        r = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "LLMCTL_PROFILES"})
        assert r.returncode == 0, f"stopped at line {r.stdout.split('>>> ')[-1][:1]}:\n{r.stdout}\n{r.stderr}"
        out = r.stdout
        assert "heavy" in out and "light" in out and "running" in out  # up and status
        summary = out.split(f">>> {next(i for i, ln in enumerate(lines) if 'run --task' in ln)}\n")[1]
        assert summary.split(">>> ")[0].strip(), "the one-shot summary printed nothing"
        assert "[llmctl" in out  # logs: the keeper's notes
    finally:
        cli("-f", str(demo), "down")
    assert all(port_is_free(p) for p in ports)
