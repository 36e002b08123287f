"""The per-test leak check of conftest.py, run on purpose-built leaky tests in a pytest of their
own: it must see every kind of process a test can leave behind (not only keepers and llama.cpp)
and a listener on a port the test drew, and stay quiet for a clean test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

TESTS = Path(__file__).parent

LEAKY = '''
import os, subprocess, sys
TOKEN = "{token}"  # in every leaked command line, so that the outer test finds only its own
from .util import port_is_free, wait_for


def test_clean(tmp_path, ports):
    ports()
    subprocess.run(["sleep", "0.1"], check=True)


def test_escaped_grandchild(tmp_path):
    """Double-forked out of our tree (setsid -f), an unremarkable name: only its inherited
    environment (LLMCTL_HOME) marks it."""
    subprocess.run(["setsid", "-f", "sleep", "301." + TOKEN], check=True)


def test_vllm_like_child(tmp_path):
    """A child named like vLLM's EngineCore (no llama-*, no keeper), its environment dropped."""
    subprocess.Popen(["VLLM::EngineCore", "-c", "import time; time.sleep(302)", TOKEN], executable=sys.executable,
                     env={})


def test_escaped_naming_tmp_dir(tmp_path):
    """Escaped, no environment, but its command line names the test's directory."""
    subprocess.run(["setsid", "-f", sys.executable, "-c", "import time; time.sleep(304)", TOKEN,
                    str(tmp_path / "model.gguf")], check=True, env={})


def test_listener_left_on_a_drawn_port(tmp_path, ports):
    """Escaped, no environment, nothing of the test in its command line: only its listening
    socket on a port from `ports` gives it away."""
    port = ports()
    code = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(305)"
    subprocess.run(["setsid", "-f", sys.executable, "-c", code, TOKEN], check=True, env={})
    wait_for(lambda: not port_is_free(port), 10, "the listener")
'''


def test_leak_check_sees_every_leftover_and_passes_a_clean_test(tmp_path):
    pkg = tmp_path / "inner" / "tests"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for f in ("conftest.py", "util.py"):
        shutil.copy(TESTS / f, pkg / f)
    token = str(int.from_bytes(os.urandom(4), "big"))  # digits: also a fraction of sleep's seconds
    (pkg / "test_leaky.py").write_text(LEAKY.replace("{token}", token))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                        f"--basetemp={tmp_path / 'inner-tmp'}", "tests"],
                       cwd=pkg.parent, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    out = r.stdout
    assert re.search(r"^PASSED tests/test_leaky.py::test_clean$", out, re.M), out
    assert "ERROR at teardown of test_clean" not in out, out
    for name, marks in (("test_escaped_grandchild", ["sleep 301."]),
                        ("test_vllm_like_child", ["VLLM::EngineCore"]),
                        ("test_escaped_naming_tmp_dir", ["time.sleep(304)"]),
                        ("test_listener_left_on_a_drawn_port", ["still listening", "time.sleep(305)"])):
        assert f"ERROR at teardown of {name}" in out, out
        section = out.split(f"ERROR at teardown of {name}")[1].split("_____ ")[0]
        for m in marks:
            assert m in section, (name, m, out)
    # the check killed what it found: nothing of the inner run is left
    left = [p for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]
    assert not left, left
    assert took < 60  # a clean test costs no wait; each leaky one at most a few seconds
