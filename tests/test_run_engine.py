"""`llmctl run` and `llmctl embed` end to end: a real llama-server (SmolLM2-135M, started
through llmctl's Supervisor once for this module, with an API key and embeddings on) and the
real llama-completion / llama-cli. Each test runs the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from .util import assert_streamed, cli, free_port, read_timed, wait_for

pytestmark = [pytest.mark.engine]

KEY = "sk-run-tests-" + os.urandom(6).hex()
KEY_ENV = "LLMCTL_TEST_RUN_KEY"


class Shared:
    def __init__(self, root: Path, home: Path, files: dict[str, Path], port: int) -> None:
        self.root, self.home, self.files, self.port = root, home, files, port


@pytest.fixture(scope="module")
def shared(tmp_path_factory, smollm2, gemma, llama_server):
    """One running llama-server ("light": SmolLM2, API key, embeddings) in a module-wide
    LLMCTL_HOME; "heavy" (Gemma) and "spare" are defined but never started. Stopped at the end."""
    from llmctl import Supervisor, load_profiles

    root = tmp_path_factory.mktemp("run-engine")
    home = root / "home"
    port, heavy, spare = free_port(), free_port(), free_port()
    main = root / "llmctl.yaml"
    main.write_text(f"""
profiles:
  light:
    model: {smollm2}
    port: {port}
    ctx_size: 2048
    batch_size: 512
    ubatch_size: 256
    threads: 2
    embeddings: true
    args: {{pooling: mean}}
    api_key_env: {KEY_ENV}
    start_timeout: 120
  heavy: {{model: {gemma}, port: {heavy}, ctx_size: 1024, threads: 2}}
  spare: {{model: {smollm2}, port: {spare}, ctx_size: 1024, threads: 2}}
  plain: {{model: {smollm2}, port: {free_port()}, ctx_size: 1024}}
tasks:
  chat: {{profile: light, temperature: 0, max_tokens: 12}}
  summary: {{profile: heavy, fallback: [spare, light], temperature: 0.7, top_p: 0.9, max_tokens: 24,
             system: "Summarize the user's text in one sentence."}}
  offline: {{profile: heavy, fallback: [spare], temperature: 0, max_tokens: 8}}
defaults:
  sampling: {{temperature: 0.35, top_p: 0.9, top_k: 40, presence_penalty: 0.2, mirostat: 0}}
""")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMCTL_HOME", str(home))
        mp.setenv(KEY_ENV, KEY)
        sup = Supervisor(load_profiles([str(main)]))
        sup.start(["light"])
    try:
        yield Shared(root, home, {"main": main}, port)
    finally:
        sup.stop(["light"])


@pytest.fixture
def env(shared, monkeypatch) -> dict:
    """This test sees the module's servers (its LLMCTL_HOME) and holds the API key."""
    monkeypatch.setenv("LLMCTL_HOME", str(shared.home))
    monkeypatch.setenv(KEY_ENV, KEY)
    return {"LLMCTL_PROFILES": str(shared.files["main"])}


def run(*args: str, env: dict, input: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return cli("run", *args, env=env, input=input, timeout=timeout)


def run_json(*args: str, env: dict, input: str = "") -> dict:
    r = run(*args, "--json", env=env, input=input)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- modes and routing ------------------------------------------------------------------------
def test_server_mode_json_fields(env):
    d = run_json("--task", "chat", "--mode", "server", "Name a colour.", env=env)
    assert d["mode"] == "server" and d["profile"] == "light" and d["task"] == "chat"
    assert d["engine"] == "llama-server" and d["url"].startswith("http://127.0.0.1:")
    assert d["text"].strip()
    assert d["tokens_in"] > 5 and 0 < d["tokens_out"] <= 12
    assert d["timings"]["predicted_n"] == d["tokens_out"] and d["timings"]["total_ms"] > 0
    assert d["params"]["sampling"]["temperature"] == 0 and d["params"]["origin"]["top_k"] == "defaults"
    assert d["model"].endswith(".gguf") and d["finish_reason"] in ("stop", "length")


def test_server_mode_streams_to_stdout_as_tokens_arrive(env):
    """The answer reaches stdout piece by piece while it is generated: many separate reads, the
    first well before the end. 300 tokens (at temperature 0 this prompt runs to the limit), so
    that the generation lasts; the check fails for a program that prints all at once (below)."""
    e = dict(os.environ, **env)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "run", "--profile", "light", "--mode", "server",
                             "-n", "300", "--temperature", "0",
                             "Write a long story about a dragon and a knight."],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        chunks, end = read_timed(proc.stdout)
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_streamed(t0, chunks, end)
    assert len(b"".join(c for _, c in chunks)) > 300  # the whole answer arrived, in pieces
    assert proc.stderr.read() == b""  # nothing but the answer, and no notes on a direct hit


def test_stream_check_fails_for_a_program_that_prints_all_at_once():
    """The check of the test above, against a real program that holds its answer for 2 s and
    then prints it in one go: it must fail."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2); print('word ' * 300)"],
                            stdout=subprocess.PIPE)
    chunks, end = read_timed(proc.stdout)
    assert proc.wait(10) == 0 and len(b"".join(c for _, c in chunks)) > 1000
    with pytest.raises(AssertionError, match="piece"):
        assert_streamed(t0, chunks, end)
    with pytest.raises(AssertionError, match="first byte"):
        assert_streamed(t0, chunks * 10, end)  # even split into many reads, all came at the end


def test_fallback_order(env):
    """summary: heavy (down) -> spare (down) -> light (running)."""
    r = run("--task", "summary", "--json", "The cat sat on the warm mat all afternoon.", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["profile"], d["mode"]) == ("light", "server")
    assert "heavy: stopped, spare: stopped, light: running" in r.stderr and "fallback" in r.stderr


def test_all_down_runs_cli_mode_with_the_tasks_profile(env, gemma):
    """offline: heavy and spare are down -> llama-completion with heavy's model (Gemma)."""
    r = run("--task", "offline", "--json", "Say hello.", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["profile"], d["mode"], d["tool"]) == ("heavy", "cli", "llama-completion")
    assert d["model"] == str(gemma) and d["url"] is None
    assert d["text"].strip() and d["tokens_in"] > 3 and 0 < d["tokens_out"] <= 8
    assert "using heavy (cli mode" in r.stderr


def test_server_mode_with_nothing_up_names_llmctl_up(env):
    r = run("--task", "offline", "--mode", "server", "hi", env=env)
    assert r.returncode == 11
    assert "no running server for task 'offline' (heavy: stopped, spare: stopped)" in r.stderr
    assert "`llmctl up heavy`" in r.stderr and r.stdout == ""


def test_cli_mode_even_when_the_server_runs(env):
    d = run_json("--profile", "light", "--mode", "cli", "-n", "6", "Say hi.", env=env)
    assert (d["mode"], d["profile"], d["tool"]) == ("cli", "light", "llama-completion")
    assert d["text"].strip() and d["tokens_out"] <= 6


def test_llama_cli_tool_gives_only_the_answer(env):
    r = run("--profile", "light", "--mode", "cli", "--cli-tool", "llama-cli", "-n", "12", "--temperature", "0",
            "Say hi.\nBe brief.", env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.strip()
    for junk in ("available commands", "Exiting", "> Say hi", "Loading model", "[ Prompt"):
        assert junk not in out


# -- parameters -------------------------------------------------------------------------------
def flag_values(argv: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i, a in enumerate(argv[:-1]):
        if a.startswith("-") and not argv[i + 1].startswith("--"):
            out.setdefault(a, []).append(argv[i + 1])
    return out


def test_same_parameters_reach_the_engine_in_both_modes(env, shared):
    """--dry-run prints the server request and the cli argv: every sampling value and the system
    prompt are in both; the model loads alike (-c -b -ub -ngl -t) in the one-shot tool and in
    the server that is actually running (its real command line, and /props)."""
    r = run("--task", "summary", "--profile", "light", "--dry-run", "--seed", "7", "--top-k", "12",
            "--min-p", "0.05", "--repeat-penalty", "1.1", "--frequency-penalty", "0.1", "--stop", "END",
            "--set", "mirostat_tau=4.5", "--set", "mirostat_eta=0.2", "Some text.", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    payload, argv = d["server"]["payload"], d["cli"]["argv"]
    flags = flag_values(argv)
    from llmctl.inference.params import SAMPLING

    sampling = d["params"]["sampling"]
    assert set(sampling) == set(SAMPLING)  # every key is set in this test
    for key, (field, _, flag) in SAMPLING.items():
        if key == "stop":
            assert payload[field] == sampling[key] == flags[flag] == ["END"]
        else:
            assert payload[field] == sampling[key], key
            assert type(sampling[key])(flags[flag][0]) == sampling[key], key
    # precedence: flags > task > defaults
    assert sampling["temperature"] == 0.7 and sampling["top_k"] == 12 and sampling["presence_penalty"] == 0.2
    system = "Summarize the user's text in one sentence."
    assert payload["messages"][0] == {"role": "system", "content": system}
    assert flags["-sys"] == [system]
    assert payload["messages"][1] == {"role": "user", "content": "Some text."} and flags["-p"] == ["Some text."]
    # load flags: the dry run's server argv, the cli argv and the live server's command line
    [entry] = json.loads(cli("status", "light", "--json", env=env).stdout)
    live = flag_values(psutil.Process(entry["pid"]).cmdline())
    server_flags = flag_values(d["server"]["argv"])
    for flag, want in (("-c", "2048"), ("-b", "512"), ("-ub", "256"), ("-ngl", "0"), ("-t", "2")):
        assert flags[flag] == server_flags[flag] == live[flag] == [want], flag
    req = urllib.request.Request(f"http://127.0.0.1:{shared.port}/props",
                                 headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        props = json.load(resp)
    assert props["default_generation_settings"]["n_ctx"] == 2048
    assert KEY not in r.stdout + r.stderr


def test_same_answer_from_both_modes_at_temperature_zero(env):
    """Same chat template, parameters and stop string: the same prompt tokens and answer."""
    args = ["--profile", "light", "--temperature", "0", "--seed", "1", "-n", "40", "--stop", "7,",
            "--system", "You are helpful.", "Count from 1 to 20, separated by commas."]
    s = run_json(*args, "--mode", "server", env=env)
    c = run_json(*args, "--mode", "cli", env=env)
    assert s["tokens_in"] == c["tokens_in"]
    assert s["text"] == c["text"]
    assert "7," not in s["text"]


# -- shell use --------------------------------------------------------------------------------
def test_stdin_pipeline_through_a_real_shell(env):
    e = dict(os.environ, **env)
    py = sys.executable
    r = subprocess.run(["bash", "-c", f"echo 'The meeting moved to Tuesday at noon.' | {py} -m llmctl run "
                                      "--task summary"], capture_output=True, text=True, env=e, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stdout.endswith("\n")
    assert "error" not in r.stderr
    # PROMPT + piped stdin: the piped text follows the prompt as context; `-` reads stdin
    r = subprocess.run(["bash", "-c", f"printf 'line one\\nline two\\n' | {py} -m llmctl run --task chat "
                                      "'Summarize:' --dry-run"], capture_output=True, text=True, env=e, timeout=60)
    assert json.loads(r.stdout)["server"]["payload"]["messages"][-1]["content"] == "Summarize:\n\nline one\nline two\n"
    r = subprocess.run(["bash", "-c", f"echo hello | {py} -m llmctl run --task chat - --dry-run"],
                       capture_output=True, text=True, env=e, timeout=60)
    assert json.loads(r.stdout)["server"]["payload"]["messages"][-1]["content"] == "hello\n"
    # stdout closed early: no traceback, exit 0
    r = subprocess.run(["bash", "-c", f"set -o pipefail; {py} -m llmctl run --profile light -n 100 "
                                      "'Tell a story.' </dev/null | head -c 5"],
                       capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 0 and len(r.stdout) == 5 and "Traceback" not in r.stderr


def test_exit_codes(env, tmp_path):
    assert run("--task", "nosuch", "x", env=env).returncode == 4
    assert run("--task", "chat", "--set", "topk=1", "x", env=env).returncode == 2
    assert run("--task", "chat", "--mode", "fast", "x", env=env).returncode == 2
    assert run("--task", "chat", env=env, input="").returncode == 2  # empty prompt
    # the server refuses: a prompt longer than the context
    r = run("--profile", "light", "--mode", "server", "word " * 3000, env=env)
    assert r.returncode == 12 and "HTTP 400" in r.stderr
    # a wrong key: the server says 401
    r = run("--task", "chat", "x", env={**env, KEY_ENV: "wrong"})
    assert r.returncode == 12 and "401" in r.stderr and "wrong" not in r.stderr
    # no key at all: said before sending anything
    e = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    r = subprocess.run([sys.executable, "-m", "llmctl", "run", "--task", "chat", "x"], env={**e, **env},
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 2 and f"${KEY_ENV}" in r.stderr
    # the one-shot tool fails: a model file that is not a model
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf" * 100)
    f = tmp_path / "bad.yaml"
    f.write_text(f"profiles:\n  broken: {{model: {bad}, port: {free_port()}}}\n")
    r = run("--profile", "broken", "x", env={"LLMCTL_PROFILES": str(f)})
    assert r.returncode == 12 and "llama-completion exited with code" in r.stderr
    # timeout
    r = run("--profile", "light", "--mode", "server", "-n", "400", "--timeout", "0.3", "Write a long story.", env=env)
    assert r.returncode == 9 and "timeout" in r.stderr


@pytest.mark.parametrize("mode", ["server", "cli"])
def test_ctrl_c_exits_130_and_leaves_nothing(env, mode):
    e = dict(os.environ, **env)
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "run", "--profile", "light", "--mode", mode,
                             "-n", "2000", "--set", "min_p=0", "Write a very long story."],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        assert proc.stdout.read(1)  # generating
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"interrupted" in proc.stderr.read()
    me = psutil.Process()
    def mine(p: psutil.Process) -> bool:  # not a llama-completion of a test run beside this one
        try:
            return p.environ().get("LLMCTL_HOME") == os.environ["LLMCTL_HOME"]
        except psutil.Error:
            return False

    def left() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline", "status"])
                if "llama-completion" in " ".join(p.info["cmdline"] or []) and p.info["cmdline"]
                and "Write a very long story." in p.info["cmdline"] and mine(p)
                and p.info["status"] not in (None, psutil.STATUS_ZOMBIE)]

    wait_for(lambda: not left(), timeout=10, what="llama-completion's end")
    assert me.is_running()
    d = run_json("--task", "chat", "--mode", "server", "hi", env=env)  # the server still answers
    assert d["text"]


# -- embeddings, images (vLLM profiles: test_vllm.py, on a real vLLM) --------------------------
def test_embeddings_for_real(env, tmp_path):
    r = cli("embed", "The cat sleeps.", "Stock markets fell.", "The cat sleeps.", env=env, input="")
    assert r.returncode == 0, r.stderr
    vecs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(vecs) == 3 and len(vecs[0]) == 576 and all(isinstance(x, float) for x in vecs[0])
    assert vecs[0] == vecs[2] and vecs[0] != vecs[1]
    r = cli("embed", "--lines", "--json", env=env, input="one\ntwo\n\n")
    d = json.loads(r.stdout)
    assert (d["profile"], d["count"], d["dimensions"]) == ("light", 2, 576) and d["tokens_in"] >= 2
    # a profile that does not embed; a profile that is not running
    assert cli("embed", "--profile", "heavy", "x", env=env, input="").returncode == 2
    f = tmp_path / "e.yaml"
    f.write_text(f"profiles:\n  emb: {{model: x.gguf, port: {free_port()}, embeddings: true}}\n")
    r = cli("embed", "x", env={"LLMCTL_PROFILES": str(f)}, input="")
    assert r.returncode == 11 and "`llmctl up emb`" in r.stderr


def test_image_to_a_server_without_mmproj_is_refused(env, tmp_path):
    """No tiny multimodal model here: the request building is covered in test_run_params.py; this
    checks the routing refuses to send an image to a server that cannot read it."""
    img = tmp_path / "x.png"
    from .test_run_params import PNG

    img.write_bytes(PNG)
    r = run("--profile", "light", "--mode", "server", "--image", str(img), "What is it?", env=env)
    assert r.returncode == 11 and "cannot read images" in r.stderr


# -- the Python API -----------------------------------------------------------------------------
def test_core_without_the_cli(env, shared):
    from llmctl.inference import embed, run_task
    from llmctl.profiles import load

    cfg = load([str(shared.files["main"])])
    pieces: list[str] = []
    r = run_task("Name a fruit.", task="chat", config=cfg, on_text=pieces.append)
    assert r.mode == "server" and r.text == "".join(pieces) and len(pieces) > 1
    v = embed(["a b c"], profile="light", config=cfg)
    assert len(v.vectors) == 1 and len(v.vectors[0]) == 576


def test_tasks_list_shows_the_live_route(env):
    r = cli("tasks", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    routes = {t["name"]: t["route"] for t in json.loads(r.stdout)}
    assert routes == {"chat": {"mode": "server", "profile": "light"},
                      "summary": {"mode": "server", "profile": "light"},
                      "offline": {"mode": "cli", "profile": "heavy"}}
