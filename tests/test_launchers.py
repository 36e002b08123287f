"""Engines and launchers as modules: `run --dry-run` shows the argv `up` starts (one builder, the
key file included); a missing API key is one error for the server and for its clients; the
engines import nothing of the supervisor; nothing outside a launcher branches on the launcher's
name; every `launcher:` a profile may name is a module implementing the Launcher protocol."""

from __future__ import annotations

import ast
import json
import os
import typing
from pathlib import Path

import psutil
import pytest

from .util import cli

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llmctl"
KEY_ENV = "LLMCTL_TEST_LAUNCH_KEY"


def keyed(tmp_path: Path, model: Path, port: int) -> dict:
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  keyed: {{model: {model}, port: {port}, ctx_size: 512, threads: 1, "
                 f"api_key_env: {KEY_ENV}}}\n")
    return {"LLMCTL_PROFILES": str(f)}


@pytest.mark.engine
def test_dry_run_shows_the_argv_up_starts_key_file_included(tmp_path, smollm2, ports, llama_server):
    """The dry run used to build llama-server's argv on its own and left out --api-key-file;
    now it is the launch spec's argv, the very command line of the server `up` starts."""
    env = keyed(tmp_path, smollm2, ports())
    env[KEY_ENV] = "sk-test-" + os.urandom(8).hex()
    r = cli("run", "--profile", "keyed", "--dry-run", "hi", env=env)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)["server"]["argv"]
    key_file = Path(os.environ["LLMCTL_HOME"]) / "run" / "keyed.key"
    assert shown[shown.index("--api-key-file") + 1] == str(key_file)
    assert env[KEY_ENV] not in r.stdout + r.stderr and not key_file.exists()  # a dry run writes nothing
    r = cli("up", "keyed", env=env)
    assert r.returncode == 0, r.stderr
    try:
        [st] = json.loads(cli("status", "keyed", "--json", env=env).stdout)
        assert psutil.Process(st["pid"]).cmdline() == shown
    finally:
        assert cli("down", "keyed", env=env).returncode == 0


def test_a_missing_key_is_one_error_for_the_server_and_its_clients(tmp_path, smollm2, ports, monkeypatch):
    """`up` (the server's key file) and `run` (the client's header) used to check the variable
    each in its own way, with two error classes and two exit codes (4 and 2)."""
    from llmctl.engines.launch import spec_for
    from llmctl.errors import ApiKeyMissing
    from llmctl.inference.request import auth_headers
    from llmctl.paths import Paths
    from llmctl.profiles import load

    monkeypatch.delenv(KEY_ENV, raising=False)
    env = keyed(tmp_path, smollm2, ports())
    prof = load([env["LLMCTL_PROFILES"]]).profiles["keyed"]
    with pytest.raises(ApiKeyMissing) as server:
        spec_for(prof, Paths.from_env())
    with pytest.raises(ApiKeyMissing) as client:
        auth_headers(prof)
    assert server.value.message == client.value.message and f"${KEY_ENV}" in server.value.message
    r = cli("up", "keyed", env=env)
    assert r.returncode == 2 and server.value.message in r.stderr and f"export {KEY_ENV}=" in r.stderr
    assert not (Path(os.environ["LLMCTL_HOME"]) / "run" / "keyed.key").exists()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (relative imports resolved), and string constants naming one."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            root = ".".join(base + ([node.module] if node.module else []))
            out += [root] + [f"{root}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("llmctl."):
            out.append(node.value)
    return out


def test_engines_import_nothing_of_the_supervisor():
    """The layer below imports no module of the one above: `supervise` runs what `engines`
    builds, and imports it, never the reverse (they used to import each other)."""
    bad = {f"{_module_name(p)} imports {name}"
           for p in sorted((PACKAGE / "engines").rglob("*.py")) for name in _imports(p)
           if name == "llmctl.supervise" or name.startswith("llmctl.supervise.")}
    assert not bad
    assert "llmctl.supervise.spec" in _imports(PACKAGE / "supervise" / "keeper.py")  # the walker sees them


def test_nothing_outside_a_launcher_branches_on_its_name():
    """The keeper, `status`, `down` and `logs` used to test ``launcher == "docker"``; they ask the
    launcher now. Left: the docker launcher itself, the profile schema and its loader (which
    name the choice), and `doctor`, which reports whether the docker and podman programs exist."""
    allowed = {PACKAGE / "engines" / "launchers" / "docker.py", PACKAGE / "cli" / "doctor_cmd.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed or path.parent.name == "profiles":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            on_name = isinstance(node, ast.Compare) and any(
                isinstance(x, ast.Attribute) and x.attr == "launcher" for x in [node.left, *node.comparators])
            if on_name or (isinstance(node, ast.Constant) and node.value == "docker"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found


def test_every_launcher_a_profile_may_name_is_a_module_with_the_protocol():
    from llmctl.engines.registry import Launcher, launcher_for
    from llmctl.profiles.schema import Launcher as LauncherName

    members = [m for m in dir(Launcher) if not m.startswith("_")]
    assert {"spawn", "stop", "after_exit", "inspect", "logs_argv", "cleanup", "render"} <= set(members)
    for name in typing.get_args(LauncherName):
        launcher = launcher_for(name)
        assert launcher.name == name and all(hasattr(launcher, m) for m in members), name
    for wrong in ("nosuch", "../native", "launchers.native"):
        with pytest.raises(ValueError):
            launcher_for(wrong)
