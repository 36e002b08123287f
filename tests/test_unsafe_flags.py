"""The unsafe-argument guard (issue 18, item 1): llama-server flags that give a server dangerous
capabilities (tools and shell, MCP, an open proxy, client-chosen files, RPC, programs) are
refused in every spelling of `args:` and as their env variables in `env:`, at `up`, in
`profiles validate` and in cli mode, unless the profile sets `allow_unsafe_args: true`. The
flag table they are found in is checked against the installed llama-server's own --help."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llmctl.engines import llama_flags, llama_server as engine
from llmctl.engines.flags import is_negation, parse_help
from llmctl.errors import ProfileError
from llmctl.profiles import load

from .util import cli, port_is_free


def profile(tmp_path: Path, body: str):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 28)
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  p:\n    model: {model}\n    port: 18555\n" + body)
    return load([str(f)]).profiles["p"], model


def refused(tmp_path: Path, body: str) -> str:
    """The message `up`'s argv and env builders give for a profile, which must be refused."""
    p, model = profile(tmp_path, body)
    with pytest.raises(ProfileError) as err:
        engine.server_argv(p, "/bin/llama-server", model)
        engine.check_env(p)
    return err.value.message


@pytest.mark.parametrize("args, capability, flag", [
    ("{agent: true}", "tools", "--agent"),  # POST /tools ran exec_shell_command unauthenticated
    ("{ag: true}", "tools", "--agent"),  # a short alias, dashes left out
    ("{'-ag': true}", "tools", "--agent"),
    ("{'--agent': true}", "tools", "--agent"),
    ("{tools: all}", "tools", "--tools"),
    ("{tools_runtime: 'ssh:host'}", "tools", "--tools-runtime"),  # llama.cpp reads --a_b as --a-b
    ("{path: /}", "files", "--path"),  # served /etc/shadow
    ("{media-path: /home}", "files", "--media-path"),
    ("{media_path: /home}", "files", "--media-path"),
    ("{slot-save-path: /home/u/.ssh}", "files", "--slot-save-path"),
    ("{mcp-servers-config: m.json}", "mcp", "--mcp-servers-config"),
    ("{mcp-servers-json: '{}'}", "mcp", "--mcp-servers-json"),
    ("{webui-mcp-proxy: true}", "proxy", "--ui-mcp-proxy"),
    ("{ui-mcp-proxy: true}", "proxy", "--ui-mcp-proxy"),
    ("{rpc: '10.0.0.9:50052'}", "network", "--rpc"),
    ("{video-ffmpeg-dir: /tmp}", "programs", "--video-ffmpeg-dir"),
    ("{jinja: --agent}", "tools", "--agent"),  # a value read as a flag after one that takes none
    ("{lora: [a.gguf, --tools]}", "tools", "--tools"),
])
def test_every_spelling_of_a_dangerous_flag_is_refused(tmp_path, args, capability, flag):
    msg = refused(tmp_path, f"    args: {args}\n")
    assert msg.startswith(f"{tmp_path / 'p.yaml'}:5: args.")
    assert f"{flag}" in msg and f"capability `{capability}`" in msg
    assert "set `allow_unsafe_args: true` in this profile" in msg


@pytest.mark.parametrize("name, flag", [
    ("LLAMA_ARG_AGENT", "--agent"), ("LLAMA_ARG_TOOLS", "--tools"), ("LLAMA_ARG_STATIC_PATH", "--path"),
    ("LLAMA_ARG_MCP_SERVERS_JSON", "--mcp-servers-json"), ("LLAMA_ARG_UI_MCP_PROXY", "--ui-mcp-proxy"),
    ("LLAMA_ARG_TOOLS_RUNTIME", "--tools-runtime"),
])
def test_a_dangerous_flags_env_variable_is_refused(tmp_path, llmctl_home, name, flag):
    from llmctl.engines.discovery import EngineBinary
    from llmctl.paths import Paths

    p, model = profile(tmp_path, f"    env: {{{name}: '1'}}\n")
    with pytest.raises(ProfileError, match=rf"p.yaml:5: env.{name}: this variable sets {flag}, which .*"
                                           r"allow_unsafe_args: true"):
        engine.launch_spec(p, EngineBinary("llama-server", "/bin/llama-server"), model, Paths.from_env())


def test_allow_unsafe_args_lets_them_through(tmp_path, llmctl_home):
    p, model = profile(tmp_path, "    args: {agent: true, path: /srv/www, jinja: --rpc}\n"
                                 "    env: {LLAMA_ARG_TOOLS: all}\n    allow_unsafe_args: true\n")
    argv = engine.server_argv(p, "/bin/llama-server", model)
    assert argv[-5:] == ["--agent", "--path", "/srv/www", "--jinja", "--rpc"]
    engine.check_profile(p)


def test_harmless_flags_and_off_switches_pass(tmp_path):
    p, model = profile(tmp_path, "    args: {flash-attn: 'on', metrics: true, no-agent: true, agent: false,"
                                 " tools: null, no_webui_mcp_proxy: true, alias: tools, seed: -1,"
                                 " chat-template-file: t.jinja, sleep-idle-seconds: 60}\n"
                                 "    env: {LLAMA_ARG_THREADS: '2', LLAMA_ARG_ENDPOINT_METRICS: '1'}\n")
    argv = engine.server_argv(p, "/bin/llama-server", model)
    assert argv[argv.index("--flash-attn"):] == [
        "--flash-attn", "on", "--metrics", "--no-agent", "--no_webui_mcp_proxy", "--alias", "tools",
        "--seed", "-1", "--chat-template-file", "t.jinja", "--sleep-idle-seconds", "60"]
    engine.check_profile(p)


def test_profiles_validate_reports_each_refused_flag(tmp_path, smollm2):
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n"
                 f"  ok: {{model: {smollm2}, port: 18801, args: {{flash-attn: 'on'}}}}\n"
                 f"  shell: {{model: {smollm2}, port: 18802, args: {{ag: true}}}}\n"
                 f"  files:\n    model: {smollm2}\n    port: 18803\n    env: {{LLAMA_ARG_STATIC_PATH: /}}\n")
    env = {"LLMCTL_PROFILES": str(f)}
    r = cli("profiles", "validate", env=env)
    assert r.returncode == 4, r.stderr
    assert f"{f}:3: args.ag: --agent" in r.stderr and "capability `tools`" in r.stderr
    assert f"{f}:7: env.LLAMA_ARG_STATIC_PATH: this variable sets --path" in r.stderr
    assert "capability `files`" in r.stderr and "allow_unsafe_args: true" in r.stderr
    r = cli("profiles", "validate", "--json", env=env)
    assert r.returncode == 4 and "args.ag" in r.stderr and not r.stdout.strip()
    f.write_text(f.read_text().replace("port: 18803\n", "port: 18803\n    allow_unsafe_args: true\n")
                 .replace("{ag: true}", "{no-ag: true}"))
    r = cli("profiles", "validate", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["profiles"] == 3


def test_cli_mode_refuses_what_the_tool_would_take(tmp_path, smollm2):
    """`run --mode cli` passes the profile's args that llama-completion takes; --rpc is one."""
    from llmctl.inference.cli_runner import cli_command
    from llmctl.inference.params import Params

    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  p: {{model: {smollm2}, port: 18555, args: {{rpc: '127.0.0.1:9'}}}}\n")
    prof = load([str(f)]).profiles["p"]
    with pytest.raises(ProfileError, match=r"p.yaml:2: args.rpc: --rpc sends .*capability `network`"):
        cli_command(prof, Params(), "hi", tool="llama-completion")
    prof.allow_unsafe_args = True
    argv = cli_command(prof, Params(), "hi", tool="llama-completion").argv
    assert argv[argv.index("--rpc") + 1] == "127.0.0.1:9"


def test_help_parser_reads_aliases_negations_and_env():
    text = ("----- common params -----\n\n"
            "-ag,   --agent, -no-ag, --no-agent      whether to enable CORS proxy and all built-in tools\n"
            "                                        (env: LLAMA_ARG_AGENT)\n"
            "--ui,  --webui, --no-ui, --no-webui     whether to enable the Web UI (default: enabled)\n"
            "--fim-qwen-1.5b-default                 use default Qwen 2.5 Coder 1.5B\n"
            "--spec-draft-type-k, -ctkd, --cache-type-k-draft TYPE\n"
            "                                        KV cache data type for K for the draft model\n"
            "                                        (env: LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K)\n")
    assert parse_help(text) == [
        ("--agent", ("-ag", "--agent", "-no-ag", "--no-agent"), "LLAMA_ARG_AGENT"),
        ("--ui", ("--ui", "--webui", "--no-ui", "--no-webui"), None),
        ("--fim-qwen-1.5b-default", ("--fim-qwen-1.5b-default",), None),
        ("--spec-draft-type-k", ("--spec-draft-type-k", "-ctkd", "--cache-type-k-draft"),
         "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K")]


def test_stored_flag_table_matches_the_installed_llama_server(llama_server):
    """A llama.cpp upgrade that adds a flag, or respells a dangerous one, fails here: run
    scripts/gen_llama_flags.py and review engine.CAPABILITIES."""
    text = subprocess.run([llama_server, "--help"], check=False, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL).stdout
    live = {c: (s, e) for c, s, e in parse_help(text)}
    stored = {c: (s, e) for c, s, e in llama_flags.FLAGS}
    assert len(live) > 200
    unknown = sorted(set(live) - set(stored))
    assert not unknown, f"llama-server lists flags the table lacks: {unknown}; run scripts/gen_llama_flags.py"
    for cap in engine.CAPABILITIES:
        for flag in cap.flags:
            assert flag in live, f"{flag} ({cap.name}) is gone from llama-server --help: review CAPABILITIES"
            assert live[flag] == stored[flag], f"{flag} ({cap.name}) changed its spellings or env variable"
            for spelling in live[flag][0]:
                assert (spelling in engine.UNSAFE) != is_negation(spelling), spelling


def test_up_refuses_agent_and_starts_nothing(tmp_path, smollm2, ports):
    port = ports()
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  agent:\n    model: {smollm2}\n    port: {port}\n    args: {{agent: true}}\n")
    r = cli("up", "agent", env={"LLMCTL_PROFILES": str(f)}, timeout=120)
    assert r.returncode == 4, r.stderr
    assert f"{f}:5: args.agent: --agent" in r.stderr and "capability `tools`" in r.stderr
    assert port_is_free(port)
    status = json.loads(cli("status", "agent", "--json", env={"LLMCTL_PROFILES": str(f)}).stdout)
    assert [s["state"] for s in status] == ["stopped"]
