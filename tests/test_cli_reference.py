"""docs/cli.md is the CLI's own --help, regenerated here: it cannot drift from the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen", REPO / "scripts" / "gen_cli_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render()
    assert "## llmctl up" in text and "## llmctl status" in text and "### llmctl profiles validate" in text
    assert (REPO / "docs" / "cli.md").read_text() == text, \
        "docs/cli.md is out of date: run `python scripts/gen_cli_reference.py`"
    keys = gen.render_keys()
    assert "| `gpu_layers` |" in keys and "| `fallback` |" in keys
    assert (REPO / "docs" / "profiles.md").read_text() == keys, \
        "docs/profiles.md is out of date: run `python scripts/gen_cli_reference.py`"


def test_cli_import_stays_light():
    """`import llmctl.cli.app` must not import the heavy modules (start-up speed)."""
    import subprocess
    import sys

    code = ("import sys, llmctl.cli.app; heavy = [m for m in ('httpx', 'rich', 'huggingface_hub', 'gguf', "
            "'starlette', 'uvicorn', 'numpy') if m in sys.modules]; print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", f"imported at start-up: {r.stdout.strip()}"
