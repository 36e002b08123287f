"""Hardening of the command line and of cli mode (issue 18 items 4 and 10, issue 12):

- a profile name from the command line is checked before it becomes a path (`down /x/app`
  must not delete /x/app.key), by the commands and again by :class:`llmctl.paths.Paths`;
- the one-shot tool gets the prompt in a private 0600 file, never in argv; runs in a directory
  llmctl owns, never the user's (llama.cpp's backend loader looks for libggml-*.so there); and
  goes, with its files, however `run` ends (answer, timeout, SIGTERM, SIGHUP, Ctrl-C);
- a tool that dies of SIGILL is named as such, with the fix, by `run` and `bench`.

Real llmctl and real llama-completion / llama-cli processes; the SIGILL tool is a stand-in that
misbehaves on purpose (tests/helpers/sigill_tool.py)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from llmctl.errors import InvalidName
from llmctl.names import NAME_MAX, check_name
from llmctl.paths import Paths

from .util import cli, free_port, wait_for

HELPERS = Path(__file__).parent / "helpers"
RULE = "[a-z0-9][a-z0-9_-]*"
BAD_NAMES = ["", "../outside", "/abs/app", "App", "a" * (NAME_MAX + 1), "app\n"]


# -- profile names (issue 18 item 4) ------------------------------------------------------------
def test_down_with_a_path_touches_nothing_there(tmp_path):
    """`llmctl down /some/dir/app` used to delete app.key and app.spec.json in /some/dir."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for f in ("app.key", "app.spec.json", "app.json"):
        (victim / f).write_text("precious\n")
    r = cli("down", str(victim / "app"))
    assert r.returncode == 2, r.stderr
    assert RULE in r.stderr and str(NAME_MAX) in r.stderr and "profiles list" in r.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["app.json", "app.key", "app.spec.json"]
    assert all((victim / f).read_text() == "precious\n" for f in ("app.key", "app.spec.json", "app.json"))


def test_every_lifecycle_command_checks_its_names(tmp_path, smollm2):
    """down, status (its fast path too), logs, up and restart refuse a name that is not a name,
    with the usage exit code and the rule, before anything becomes a path: `logs ../secret`
    used to print LLMCTL_HOME/secret.log."""
    home = Path(os.environ["LLMCTL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "secret.log").write_text("TOP SECRET\n")
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {free_port()}}}\n")
    runs = [(cmd, name) for cmd in ("down", "status", "logs") for name in BAD_NAMES + ["../secret"]]
    runs += [(cmd, name) for cmd in ("up", "restart") for name in ("", "../outside", "a" * (NAME_MAX + 1))]
    for cmd, name in runs:
        r = cli("-f", str(f), cmd, name, timeout=60)
        assert r.returncode == 2, (cmd, name, r.returncode, r.stderr)
        assert RULE in r.stderr and "TOP SECRET" not in r.stdout + r.stderr, (cmd, name, r.stderr)
    assert sorted(p.name for p in home.iterdir()) == ["secret.log"]  # no lock, state or log made
    (home / "state").mkdir()
    (home / "state" / "Stray.json").write_text("{}")  # not a record: status and down --all pass it by
    r = cli("-f", str(f), "status")
    assert r.returncode == 3 and "light" in r.stdout and "Stray" not in r.stdout + r.stderr, r.stderr
    r = cli("-f", str(f), "down", "--all")
    assert r.returncode == 0 and "Stray" not in r.stdout + r.stderr, r.stderr


def test_paths_refuse_what_is_not_a_name():
    """Defence in depth: Paths itself never turns a bad name into a path."""
    paths = Paths.from_env()
    for method in (paths.state_file, paths.lock_file, paths.spec_file, paths.key_file, paths.log_file):
        for bad in BAD_NAMES + [None, "x/../../etc/passwd"]:
            with pytest.raises(InvalidName, match=r"names match \[a-z0-9\]"):
                method(bad)
        assert method("a" * NAME_MAX).parent in (paths.state, paths.run, paths.logs)
    assert paths.key_file("heavy-1_b") == paths.run / "heavy-1_b.key"
    assert check_name("m-1", what="model") == "m-1"
    with pytest.raises(InvalidName) as ei:
        check_name("../m", what="model")
    from llmctl.errors import describe

    code, msg, hint = describe(ei.value)
    assert code == 2 and "not a valid model name" in msg and "llmctl models list" in hint


# -- cli mode: the prompt, the tool's directory and its end (issue 18 item 10, issue 12) ---------
def _tool_child(parent: int, tool: str) -> psutil.Process | None:
    try:
        for p in psutil.Process(parent).children():
            cmd = p.cmdline()
            if cmd and Path(cmd[0]).name == tool:
                return p
    except psutil.Error:
        pass
    return None


def _default_signals() -> None:
    """In the `run` under test: SIGINT and SIGHUP as a terminal would deliver them, whatever this
    test runner inherited (a background job ignores SIGINT, nohup ignores SIGHUP)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _check_private(tool: psutil.Process, prompt: str, system: str, tmp: Path, user: Path) -> None:
    """While the tool runs: neither prompt is in its argv; the prompt is in a 0600 file in a
    0700 directory of llmctl's under TMPDIR, which is also the tool's cwd (never the user's)."""
    cmd = tool.cmdline()
    assert prompt not in " ".join(cmd) and system not in " ".join(cmd), cmd
    pf = Path(cmd[cmd.index("-f") + 1])
    assert pf.read_text() == prompt + "\n"
    assert stat.S_IMODE(pf.stat().st_mode) == 0o600 and stat.S_IMODE(pf.parent.stat().st_mode) == 0o700
    assert pf.parent.parent == tmp
    sf = Path(cmd[cmd.index("-sysf") + 1])
    assert sf.parent == pf.parent and sf.read_text() == system + "\n"
    assert Path(tool.cwd()) == pf.parent != user
    assert not [m.path for m in tool.memory_maps() if m.path.startswith(str(user))]  # the stray .so
    assert os.getpgid(tool.pid) == tool.pid  # its own group, killed whole


ENDS = {"answer": 0, "timeout": 9, "SIGTERM": -signal.SIGTERM, "SIGHUP": -signal.SIGHUP, "SIGINT": 130}


@pytest.mark.engine
@pytest.mark.parametrize("end,tool", [("answer", "llama-completion"), ("timeout", "llama-completion"),
                                      ("SIGTERM", "llama-completion"), ("SIGHUP", "llama-cli"),
                                      ("SIGINT", "llama-completion")])
def test_the_prompt_stays_private_and_the_tool_ends_with_run(tmp_path, smollm2, end, tool):
    """`run --mode cli` from a directory holding a garbage libggml-cpu-x.so: the tool never runs
    there, `ps` never shows the prompt, and however `run` ends the tool is gone and TMPDIR is
    empty (the tool used to outlive a SIGTERMed `run`, with the prompt in its argv)."""
    user, tmp = tmp_path / "user", tmp_path / "tmp"
    user.mkdir()
    tmp.mkdir()
    (user / "libggml-cpu-x.so").write_bytes(b"not a shared library\n" * 8)
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {free_port()}, ctx_size: 4096, threads: 2}}\n")
    # at temperature 0 this count runs on for thousands of tokens, past the timeout and the signals
    # (a random tag in the prompt can make it stop at once)
    prompt, system = "Request 7f3a. Count from 1 to 5000, separated by commas.", "You count. system-7f3a"
    argv = [sys.executable, "-m", "llmctl", "-f", str(f), "run", "--profile", "light", "--mode", "cli",
            "--cli-tool", tool, "-n", "200" if end == "answer" else "4000", "--temperature", "0",
            "--system", system, "--timeout", "4" if end == "timeout" else "300", prompt]
    proc = subprocess.Popen(argv, cwd=user, env={**os.environ, "TMPDIR": str(tmp)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_signals)
    try:
        child = wait_for(lambda: _tool_child(proc.pid, tool), timeout=60, what=f"{tool} to start")
        _check_private(child, prompt, system, tmp, user)
        if end.startswith("SIG"):
            assert proc.stdout.read(1)  # generating
            proc.send_signal(getattr(signal, end))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == ENDS[end], err
    assert not child.is_running(), f"{tool} outlived run"  # run reaps it before it ends
    assert list(tmp.iterdir()) == []
    if end == "answer":
        assert out.strip()
    if end == "SIGINT":
        assert b"interrupted" in err


# -- SIGILL in cli mode -------------------------------------------------------------------------
def _sigill_build(tmp_path: Path) -> Path:
    """A build folder whose tools die of SIGILL: tests/helpers/sigill_tool.py installed as
    llama-server (never run here) and llama-completion. Returns the llama-server path."""
    build = tmp_path / "build"
    build.mkdir()
    text = (HELPERS / "sigill_tool.py").read_text()
    for name in ("llama-server", "llama-completion"):
        (build / name).write_text(f"#!{sys.executable}\n{text}")
        (build / name).chmod(0o755)
    return build / "llama-server"


def _sigill_profile(tmp_path: Path) -> Path:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(64))
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  ill: {{model: {model}, port: {free_port()}, binary: {_sigill_build(tmp_path)}}}\n")
    return f


def test_run_names_an_illegal_instruction_and_the_fix(tmp_path):
    """The tool's death by signal 4 used to read "exited with code -4"."""
    r = cli("-f", str(_sigill_profile(tmp_path)), "run", "--profile", "ill", "--mode", "cli", "Say hi.", timeout=60)
    assert r.returncode == 12, r.stderr
    assert "llama-completion killed by signal 4 (SIGILL, illegal instruction" in r.stderr
    assert "portable llama.cpp build" in r.stderr and "sigill test tool" in r.stderr  # the fix, its log
    assert r.stdout == ""


def test_bench_names_an_illegal_instruction_and_the_fix(tmp_path):
    f = str(_sigill_profile(tmp_path))
    args = ("bench", "ill", "--mode", "cli", "--runs", "1", "--prompt-words", "5", "--max-tokens", "4")
    r = cli("-f", f, *args, timeout=60)
    assert r.returncode == 12, r.stderr
    assert "illegal instruction" in r.stderr and "portable llama.cpp build" in r.stderr
    r = cli("-f", f, *args, "--json", timeout=60)
    assert r.returncode == 12, r.stderr
    import json

    [row] = json.loads(r.stdout)
    assert row["runs"] == 0 and "SIGILL, illegal instruction" in row["error"]
    assert "portable llama.cpp build" in r.stderr
