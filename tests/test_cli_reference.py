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


def test_fault_table_names_tests_that_exist():
    """docs/faults.md names the test of each fault case: each name must be a test that exists."""
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "faults.md").read_text()
    current, checked = None, 0
    for token in re.findall(r"`([^`]+)`", text):
        m = re.fullmatch(r"(test_\w+\.py)?(?:::(test_\w+))?", token)
        if not m or not (m.group(1) or m.group(2)):
            continue
        if m.group(1):
            current = m.group(1)
            assert (repo / "tests" / current).exists(), current
        if m.group(2):
            assert re.search(rf"^def {m.group(2)}\(", (repo / "tests" / current).read_text(), re.M), \
                f"{current}::{m.group(2)} is named in docs/faults.md but does not exist"
            checked += 1
    assert checked >= 30


def test_readme_example_profile_file_validates(tmp_path):
    """The annotated example in the README's Profiles section is a valid file."""
    import re

    from .util import cli

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"```yaml\n(profiles:\n  heavy:\n.*?)```", text, re.S)
    assert m, "README.md has no example profile file"
    f = tmp_path / "example.yaml"
    f.write_text(m.group(1))
    r = cli("-f", str(f), "profiles", "validate", env={"LLAMA_KEY": "x"})
    assert r.returncode == 0, r.stderr
    assert "2 profile(s), 2 task(s)" in r.stdout
