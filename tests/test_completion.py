"""Shell completion, run in the real shells (bash, zsh and fish from Debian's packages) against
the files in completions/: command names, and profile, task and model names from the user's own
profiles and model store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .util import cli

REPO = Path(__file__).resolve().parents[1]
FILES = {"bash": "llmctl.bash", "zsh": "_llmctl", "fish": "llmctl.fish"}


@pytest.fixture
def shell_env(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("profiles:\n  heavy: {model: h.gguf, port: 18901}\n  light: {model: l.gguf, port: 18902}\n"
                    "  lab: {model: x.gguf, port: 18903}\n")
    return {**os.environ, "LLMCTL_PROFILES": str(prof),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def need(shell: str) -> None:
    if not shutil.which(shell):
        pytest.fail(f"{shell} is not installed (scripts/setup.sh --tests installs it: apt-get install {shell})")


@pytest.mark.parametrize("shell", sorted(FILES))
def test_committed_files_match_the_generator(shell):
    r = cli("completion", shell)
    assert r.returncode == 0, r.stderr
    assert (REPO / "completions" / FILES[shell]).read_text().strip() == r.stdout.strip()


def run_bash(words: list[str], env) -> list[str]:
    need("bash")
    script = (f"source {REPO / 'completions' / 'llmctl.bash'}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _llmctl_completion llmctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return [x for x in out.stdout.splitlines() if x]


def test_bash_commands_and_profile_names(shell_env):
    assert "status" in run_bash(["llmctl", "st"], shell_env)
    assert sorted(run_bash(["llmctl", "up", ""], shell_env)) == ["heavy", "lab", "light"]
    assert sorted(run_bash(["llmctl", "down", "l"], shell_env)) == ["lab", "light"]


def test_bash_task_and_model_names(shell_env, tmp_path, smollm2):
    prof = tmp_path / "t.yaml"
    prof.write_text("profiles:\n  light: {model: l.gguf, port: 18904}\n"
                    "tasks:\n  summary: {profile: light}\n  reasoning: {profile: light}\n")
    env = {**shell_env, "LLMCTL_PROFILES": str(prof)}
    assert cli("import", str(smollm2), "--as", "tiny-one", "--link", env=env).returncode == 0
    assert sorted(run_bash(["llmctl", "run", "--task", ""], env)) == ["reasoning", "summary"]
    assert run_bash(["llmctl", "models", "rm", "ti"], env) == ["tiny-one"]
    assert run_bash(["llmctl", "models", "show", ""], env) == ["tiny-one"]


def test_zsh_profile_names(shell_env):
    """zsh without a terminal: compdef and _arguments (zsh's completion functions) are replaced
    by stubs that print what the script hands them; the script and llmctl's answers are real."""
    need("zsh")
    script = (f"compdef() {{ :; }}; _arguments() {{ print -rl -- \"$@\"; }}; "
              f"source {REPO / 'completions' / '_llmctl'}; "
              "words=(llmctl logs ''); CURRENT=3; _llmctl_completion")
    out = subprocess.run(["zsh", "-f", "-c", script], env=shell_env, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("*: :((") and all(f'"{n}"' in out.stdout for n in ("heavy", "light", "lab")), \
        out.stdout + out.stderr


def test_fish_commands_and_profile_names(shell_env):
    need("fish")
    src = REPO / "completions" / "llmctl.fish"
    out = subprocess.run(["fish", "-c", f"source {src}; complete -C 'llmctl up '; complete -C 'llmctl sta'"],
                         env=shell_env, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert {"heavy", "light", "lab"} <= set(lines), out.stdout + out.stderr
    assert any(line.startswith("status\t") for line in lines)


def test_install_writes_where_each_shell_looks(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": "", "ZDOTDIR": ""}
    for shell, rel in (("bash", ".local/share/bash-completion/completions/llmctl"), ("zsh", ".zfunc/_llmctl"),
                       ("fish", ".config/fish/completions/llmctl.fish")):
        r = cli("completion", shell, "--install", env=env)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / rel).read_text().strip() == (REPO / "completions" / FILES[shell]).read_text().strip()
