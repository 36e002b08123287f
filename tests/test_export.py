"""`llmctl export`: every seed profile file through every target, each checked by that target's own
tool: `kubernetes-validate --strict` (every Kubernetes version it ships), SkyPilot's parser
(`sky.Task.from_yaml`, in .venv-sky), podman-compose (its dry run for every seed; the demo really
brought up under podman + runc and asked `run --task summary`), `systemd-analyze verify` (and the
units' own commands run). Also: the same bytes for the same profiles, the args are the argv `up`
starts, API keys never in a file, the gateway's ConfigMap routes tasks to the Services.

The gateway's ConfigMap holds `engine: remote` profiles: the real loader reads it here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest
import yaml

from .util import cli, wait_for

REPO = Path(__file__).resolve().parents[1]
SEEDS = sorted((REPO / "profiles").glob("*.yaml"))
TARGETS = ("k8s", "skypilot", "compose", "systemd")
SKY_PYTHON = REPO / ".venv-sky" / "bin" / "python"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
SETUP = "`scripts/setup.sh --tests` installs it"


def need(tool: str | Path) -> str:
    found = shutil.which(str(tool))
    if not found:
        pytest.fail(f"{tool} is missing: {SETUP}")
    return found


def export(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = cli(*args, env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(documents: list[dict], kind: str, name: str) -> dict:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


# -- the YAML writer ------------------------------------------------------------------------------
def test_yaml_writer_reads_back_what_it_was_given():
    """Strings that YAML 1.1 parsers read as something else (no, on, 0755, 1e3, -1, .inf, "a: b",
    "#x") come back as the same strings; comments never change a value; multi-line text is a block."""
    from llmctl.export.yamlout import Note, dump, plain

    awkward = ["no", "On", "y", "~", "null", "0755", "1e3", "-1", "-.5", ".inf", "a: b", "#x", "x #y", "",
               "-", "--host", "8080:80", "$x", "${X:?y}", "tab\there", "ünï", "trail ", "two\nlines\n",
               "no newline\nat end", " lead\nx", "x\n\n", "@at", "=", "[list]", "{map}", "'q'", '"dq"']
    data = {"s": awkward, "n": Note({"k": Note("no", "c # d"), "i": 1, "f": 0.5, "b": False, "z": None}, "m"),
            "l": [Note({"a": 1, "b": [1, Note(2, "two")]}, "item"), []], "e": {}, "block": "a\nb\n"}
    text = dump(data, ["header", ""])
    assert yaml.safe_load(text) == plain(data)
    assert "block: |\n  a\n  b\n" in text and "# item\n- a: 1" in text


# -- every seed file through every target ---------------------------------------------------------
def check_k8s(files: list[Path], tmp_path: Path) -> None:
    r = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", *map(str, files)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, r.stdout + r.stderr


def check_skypilot(files: list[Path], tmp_path: Path) -> None:
    if not SKY_PYTHON.exists():
        pytest.fail(f"{SKY_PYTHON} is missing: {SETUP}")
    code = ("import sys, sky\nfor f in sys.argv[1:]:\n    t = sky.Task.from_yaml(f)\n"
            "    assert t.service is not None and t.run, f\n    print(f, t.service.readiness_path)\n")
    r = subprocess.run([str(SKY_PYTHON), "-c", code, *map(str, files)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(" /health") == len(files), r.stdout


def check_compose(files: list[Path], tmp_path: Path) -> None:
    """podman-compose reads the file and prints the podman commands it would run (``/bin/true``
    as podman: nothing is created, not even the project's network)."""
    [path] = files
    r = subprocess.run([need("podman-compose"), "--podman-path", "/bin/true", "--dry-run", "-p", "llmctl-check",
                        "-f", str(path), "up", "-d"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    services = yaml.safe_load(path.read_text())["services"]
    runs = [ln for ln in r.stdout.splitlines() if ln.startswith("/bin/true run") or " run --name=" in ln]
    assert len(runs) == len(services), r.stdout
    for name, s in services.items():
        [line] = [ln for ln in runs if f"--name=llmctl-check_{name}_1" in ln]
        assert f"-p {s['ports'][0]}" in line and s["image"] in line, line


def check_systemd(files: list[Path], tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    r = subprocess.run([need("systemd-analyze"), "--user", "verify", *map(str, files)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


CHECKS = {"k8s": check_k8s, "skypilot": check_skypilot, "compose": check_compose, "systemd": check_systemd}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("seed", SEEDS, ids=[s.stem for s in SEEDS])
def test_every_seed_file_through_every_target(tmp_path, seed, target):
    """Each target's own tool accepts the export of each seed file; writing to -o DIR and printing
    on stdout (from another working directory) give the same bytes."""
    out = tmp_path / "out"
    files = [Path(p) for p in export("-f", str(seed), "export", target, "-o", str(out), cwd=tmp_path).stdout.split()]
    assert files and sorted(files) == sorted(out.iterdir())
    other = tmp_path / "elsewhere"
    other.mkdir()
    again = export("-f", str(seed), "export", target, cwd=other).stdout
    joined = "\n".join(f"### {f.name}\n{f.read_text()}" for f in files) if target == "systemd" \
        else "---\n".join(f.read_text() for f in files)
    assert again == joined
    CHECKS[target](files, tmp_path)


def test_k8s_valid_for_every_kubernetes_version_shipped(tmp_path):
    """`kubernetes-validate --strict` for each cluster version whose schemas it ships."""
    import kubernetes_validate.utils as kv

    files = []
    for seed in SEEDS:
        out = tmp_path / seed.stem
        export("-f", str(seed), "export", "k8s", "-o", str(out), "--namespace", "llm", "--storage-class", "fast")
        files += sorted(out.iterdir())
    versions = sorted(kv.all_versions(), key=lambda v: tuple(int(x) for x in v.split(".")))
    assert len(versions) >= 5, versions
    for version in versions:
        r = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "-k", version, *map(str, files)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"Kubernetes {version}:\n{r.stdout}{r.stderr}"


# -- what the k8s export says -----------------------------------------------------------------------
def test_k8s_gateway_routes_summary_to_the_light_service(tmp_path):
    """The done-when of the issue: bestbox's gateway ConfigMap sends `summary` to the light
    Service, every server as an `engine: remote` profile with its Service's URL."""
    out = tmp_path / "out"
    export("-f", str(REPO / "profiles" / "bestbox.yaml"), "export", "k8s", "-o", str(out))
    light = docs(out / "llmctl-light.yaml")
    service = find(light, "Service", "llmctl-light")
    assert service["spec"]["ports"][0]["port"] == 8081
    gateway = docs(out / "llmctl-gateway.yaml")
    text = find(gateway, "ConfigMap", "llmctl-gateway")["data"]["profiles.yaml"]
    cfg = yaml.safe_load(text)
    assert cfg["profiles"]["light"] == {"engine": "remote", "url": "http://llmctl-light:8081",
                                        "description": "classification, intent, summaries, ASR clean-up"}
    assert cfg["profiles"]["heavy"]["url"] == "http://llmctl-heavy:8080"
    assert cfg["tasks"]["summary"]["profile"] == "light" and cfg["tasks"]["summary"]["fallback"] == ["heavy"]
    pod = find(gateway, "Deployment", "llmctl-gateway")["spec"]["template"]
    import hashlib

    assert pod["metadata"]["annotations"]["llmctl/profiles-sha256"] == hashlib.sha256(text.encode()).hexdigest()
    argv = pod["spec"]["containers"][0]["command"]
    assert argv[:3] == ["llmctl", "-f", "/etc/llmctl/profiles.yaml"] and "serve" in argv
    (tmp_path / "gateway.yaml").write_text(text)  # what the gateway reads: the real loader accepts it
    r = cli("-f", str(tmp_path / "gateway.yaml"), "profiles", "validate")
    assert r.returncode == 0 and "2 profile(s), 8 task(s)" in r.stdout, r.stdout + r.stderr


def test_remote_profiles_go_to_the_gateway_only(tmp_path):
    """A profile that is already `engine: remote` runs nowhere: k8s's gateway keeps it as written
    (key, health, verify), the other targets leave it out and say so; naming only it is refused."""
    f = tmp_path / "r.yaml"
    f.write_text("profiles:\n  light: {model: m.gguf, port: 18805}\n"
                 "  far: {engine: remote, url: 'https://gpu-box:8443', model: big, api_key_env: FAR_KEY,\n"
                 "        health: /v1/models, verify: false}\n"
                 "tasks:\n  summary: {profile: light, fallback: [far]}\n")
    out = tmp_path / "out"
    export("-f", str(f), "export", "k8s", "-o", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["llmctl-gateway.yaml", "llmctl-light.yaml"]
    gateway = docs(out / "llmctl-gateway.yaml")
    text = find(gateway, "ConfigMap", "llmctl-gateway")["data"]["profiles.yaml"]
    cfg = yaml.safe_load(text)
    assert cfg["profiles"]["far"] == {"engine": "remote", "url": "https://gpu-box:8443", "model": "big",
                                      "api_key_env": "FAR_KEY", "health": "/v1/models", "verify": False}
    assert cfg["tasks"]["summary"] == {"profile": "light", "fallback": ["far"]}
    env = find(gateway, "Deployment", "llmctl-gateway")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "FAR_KEY", "valueFrom": {"secretKeyRef": {"name": "llmctl-keys", "key": "FAR_KEY"}}} in env
    (tmp_path / "gateway.yaml").write_text(text)
    assert cli("-f", str(tmp_path / "gateway.yaml"), "profiles", "validate").returncode == 0
    for target in ("compose", "skypilot", "systemd"):
        text = export("-f", str(f), "export", target).stdout
        assert "Left out: far (engine: remote" in text and "gpu-box" not in text
        r = cli("-f", str(f), "export", target, "far")
        assert r.returncode == 2 and "nothing to export" in r.stderr, r.stderr


def test_k8s_maps_the_profile(tmp_path):
    """bestbox: images by backend (Vulkan's, light's own docker.image), GPUs as nvidia.com/gpu /
    amd.com/gpu, the start timeout as startup probes, stop_timeout as the grace period, the
    model pulled by an init container and read from its manifest at start."""
    out = tmp_path / "out"
    export("-f", str(REPO / "profiles" / "bestbox.yaml"), "export", "k8s", "-o", str(out))
    heavy = find(docs(out / "llmctl-heavy.yaml"), "Deployment", "llmctl-heavy")["spec"]["template"]["spec"]
    light = find(docs(out / "llmctl-light.yaml"), "Deployment", "llmctl-light")["spec"]["template"]["spec"]
    [h], [lt] = heavy["containers"], light["containers"]
    assert h["image"] == "ghcr.io/ggml-org/llama.cpp:server-vulkan"
    assert lt["image"] == "ghcr.io/ggml-org/llama.cpp:server-rocm"
    assert h["resources"] == {"limits": {"nvidia.com/gpu": 1}} and lt["resources"] == {"limits": {"amd.com/gpu": 1}}
    assert h["startupProbe"]["failureThreshold"] * h["startupProbe"]["periodSeconds"] == 600
    assert h["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"} and "livenessProbe" not in h
    assert heavy["terminationGracePeriodSeconds"] == 10
    assert heavy["initContainers"][0]["command"] == ["llmctl", "pull", "qwen2.5-14b:Q4_K_M"]
    assert h["command"][:2] == ["/bin/sh", "-c"] and h["args"][:2] == ["-m", "@MODEL@"]
    assert h["args"][h["args"].index("--flash-attn") + 1] == "on" and "--jinja" in h["args"]
    assert not any(e["name"].endswith("VISIBLE_DEVICES") for e in h.get("env", []))  # the device plugin picks
    text = (out / "llmctl-heavy.yaml").read_text()
    assert "- -c  # ctx_size (bestbox.yaml:12)" in text and "failureThreshold: 60" in text


def test_k8s_args_are_the_argv_up_starts(tmp_path, smollm2, ports):
    """The Deployment's args are `run --dry-run`'s server argv (the one `up` starts) after the
    program, with the model at its place in the volume and the bind address every interface."""
    assert cli("import", str(smollm2), "--as", "tiny", "--link").returncode == 0
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  light:\n    model: tiny\n    port: {ports()}\n    ctx_size: 2048\n    threads: 2\n"
                 "    parallel: 2\n    args: {jinja: true, flash-attn: 'on', temp: 0.5}\n")
    dry = json.loads(export("-f", str(f), "run", "--profile", "light", "--dry-run", "--json", "hi").stdout)
    argv = dry["server"]["argv"]
    out = tmp_path / "out"
    export("-f", str(f), "export", "k8s", "-o", str(out))
    [c] = find(docs(out / "llmctl-light.yaml"), "Deployment", "llmctl-light")["spec"]["template"]["spec"]["containers"]
    model, host = argv.index("-m") + 1, argv.index("--host") + 1
    assert c["args"][model - 1] == f"/var/lib/llmctl/models/tiny/{smollm2.name}" and c["args"][host - 1] == "0.0.0.0"
    assert [a for i, a in enumerate(c["args"]) if i + 1 not in (model, host)] == \
        [a for i, a in enumerate(argv[1:]) if i + 1 not in (model, host)]
    assert "command" not in c  # the file is known: the image's own entrypoint runs


def test_api_keys_are_never_written(tmp_path):
    """A profile with api_key_env: the key's value is in no exported file of any target (and the
    export needs none); each target takes it from its own secret store instead."""
    f = tmp_path / "k.yaml"
    f.write_text("profiles:\n  a: {model: m.gguf, port: 18801, api_key_env: A_KEY}\n"
                 "  v: {engine: vllm, model: hf:org/repo, port: 18802, backend: cuda, api_key_env: V_KEY}\n")
    secret = "s3cr3t-value-not-for-files"
    seen = {}
    for target in TARGETS:
        for env in ({"A_KEY": secret, "V_KEY": secret}, {}):
            seen[target] = export("-f", str(f), "export", target, env=env).stdout
            assert secret not in seen[target]
    k8s = list(yaml.safe_load_all(seen["k8s"]))
    a = find(k8s, "Deployment", "llmctl-a")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LLAMA_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llmctl-keys", "key": "A_KEY"}}} in a
    v = find(k8s, "Deployment", "llmctl-v")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llmctl-keys", "key": "V_KEY"}}} in v
    compose = yaml.safe_load(seen["compose"])["services"]
    assert compose["a"]["environment"]["LLAMA_API_KEY"].startswith("${A_KEY:?")
    sky = list(yaml.safe_load_all(seen["skypilot"]))
    assert sky[1]["secrets"] == {"VLLM_API_KEY": None}
    assert "EnvironmentFile=-%E/llmctl/keys.env" in seen["systemd"]


def test_refused_command_lines(tmp_path):
    """Options of another target, an unknown target, --image for no profile, -o with --install,
    a bad namespace, two profiles that would share a Kubernetes name: exit 2, nothing written."""
    f = REPO / "profiles" / "demo.yaml"
    for args, words in [(["compose", "--namespace", "x"], "--namespace is for k8s"),
                        (["helm"], "no export target 'helm'"),
                        (["k8s", "--image", "ghost=img:1"], "--image names no profile: ghost"),
                        (["systemd", "--install", "-o", "d"], "not both"),
                        (["systemd", "--image", "i:1"], "--image is for"),
                        (["k8s", "--namespace", "Bad_NS"], "not a Kubernetes namespace")]:
        r = cli("-f", str(f), "export", *args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    clash = tmp_path / "clash.yaml"
    clash.write_text("profiles:\n  a_b: {model: m.gguf, port: 18803}\n  a-b: {model: m.gguf, port: 18804}\n")
    r = cli("-f", str(clash), "export", "k8s")
    assert r.returncode == 2 and "both become 'llmctl-a-b'" in r.stderr, r.stderr


# -- the model read at start ------------------------------------------------------------------------
def test_wrapper_reads_the_file_from_the_store_manifest(tmp_path, smollm2):
    """The sh wrapper a container runs when only `llmctl pull` knows the file: it reads the
    manifest llmctl really writes and replaces the mark; with no manifest it stops, saying why."""
    from llmctl.export.command import WRAPPER

    assert cli("import", str(smollm2), "--as", "tiny").returncode == 0  # a copy: its manifest path is relative
    entry = Path(os.environ["LLMCTL_HOME"]) / "models" / "tiny"
    r = subprocess.run(["/bin/sh", "-c", WRAPPER, "sh", str(entry), "echo", "-m", "@MODEL@", "--x", "a b"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == f"-m {entry}/{smollm2.name} --x a b\n", r.stdout + r.stderr
    r = subprocess.run(["/bin/sh", "-c", WRAPPER, "sh", str(tmp_path), "echo", "@MODEL@"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "did llmctl pull run?" in r.stderr


# -- systemd: the units' commands, for real -----------------------------------------------------------
def test_systemd_install_and_the_units_commands(tmp_path, smollm2, ports):
    """--install writes llmctl-NAME.service under $XDG_CONFIG_HOME/systemd/user; systemd-analyze
    accepts it; its ExecStart brings the server up (running, healthy) and its ExecStop stops it."""
    f = tmp_path / "p.yaml"
    f.write_text(f"profiles:\n  light: {{model: {smollm2}, port: {ports()}, ctx_size: 1024, threads: 2}}\n")
    export("-f", str(f), "export", "systemd", "--install")
    unit = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "llmctl-light.service"
    check_systemd([unit], tmp_path)
    lines = unit.read_text().splitlines()

    def command(key: str) -> list[str]:
        [line] = [ln for ln in lines if ln.startswith(f"{key}=")]
        return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(line.split("=", 1)[1])]

    env = dict(os.environ)
    for ln in lines:
        if ln.startswith("Environment="):
            k, v = shlex.split(ln.split("=", 1)[1])[0].split("=", 1)
            env[k] = v
    started = subprocess.run(command("ExecStart"), capture_output=True, text=True, timeout=300, env=env)
    try:
        assert started.returncode == 0, started.stderr
        [st] = json.loads(cli("-f", str(f), "status", "--json").stdout)
        assert st["state"] == "running" and st["health"], st
    finally:
        stopped = subprocess.run(command("ExecStop"), capture_output=True, text=True, timeout=120, env=env)
    assert stopped.returncode == 0, stopped.stderr
    [st] = json.loads(cli("-f", str(f), "status", "--json").stdout)
    assert st["state"] == "stopped"


# -- compose: the demo under podman-compose -----------------------------------------------------------
IMAGE = "localhost/llmctl-export-llama:1"


def _libraries(binary: str) -> list[str]:
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30, check=True)
    return re.findall(r"(/\S+) \(0x", r.stdout)


def _image_root(root: Path, engine: Path) -> Path:
    """llama.cpp's server image in miniature: /app holds llama-server and its libraries; sh, sed
    and curl (the wrapper and the healthcheck) with the machine's libraries they load."""
    app = root / "app"
    app.mkdir(parents=True)
    for f in engine.parent.iterdir():
        if f.name == "llama-server" or ".so" in f.name:
            shutil.copy2(f, app / f.name, follow_symlinks=False)
    tools = {"/bin/sh": os.path.realpath("/bin/sh"), "/usr/bin/sed": need("sed"), "/usr/bin/curl": need("curl")}
    libs = set(_libraries(str(engine)))
    for inside, here in tools.items():
        (root / inside.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(here, root / inside.lstrip("/"))
        libs.update(_libraries(here))
    for lib in sorted(libs):
        if not lib.startswith(str(engine.parent)):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), target)
    for d in ("tmp", "dev", "proc", "sys", "etc"):
        (root / d).mkdir(exist_ok=True)
    tar = root.with_suffix(".tar")
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    return tar


@pytest.fixture(scope="module")
def podman_store(tmp_path_factory, llama_server):
    """The tests' own podman (tests/helpers/podman_store.py: configuration and storage under a
    temporary folder) with an image that needs no mounts, as an exported Compose file runs it."""
    if shutil.which("podman") is None:
        pytest.fail(f"podman is missing: {SETUP}")
    from .helpers.podman_store import make

    pod = make(tmp_path_factory.mktemp("podman-export"), Path(llama_server).resolve())
    tar = _image_root(pod.base / "export-root", Path(llama_server).resolve())
    pod.run("import", "--change", 'ENTRYPOINT ["/app/llama-server"]', "--change", "WORKDIR /app", str(tar), IMAGE,
            timeout=300)
    yield pod
    left = pod.clean()
    pod.remove_images()
    shutil.rmtree(pod.base, ignore_errors=True)
    assert not left, f"containers left in the tests' storage: {left}"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.container
def test_compose_demo_runs_under_podman_compose(tmp_path, podman_store, smollm2, gemma, ports):
    """The demo's Compose file (with --image: a locally made image, no registry here) comes up
    under podman-compose with podman + runc, answers `run --task summary` from its light server,
    and goes down leaving no container. heavy's model is in the store when exporting (its file
    is named); light's is imported afterwards, as `llmctl pull` fills the store where the file
    runs: its command reads the file from the store entry's manifest at start."""
    pod, compose = podman_store, need("podman-compose")
    heavy, light = ports(), ports()
    demo = (REPO / "profiles" / "demo.yaml").read_text()
    f = tmp_path / "demo.yaml"
    f.write_text(demo.replace("port: 18180", f"port: {heavy}").replace("port: 18181", f"port: {light}"))
    assert cli("import", str(gemma), "--as", "gemma3-270m-q4_k_m", "--link").returncode == 0
    out = tmp_path / "out"
    export("-f", str(f), "export", "compose", "--image", IMAGE, "-o", str(out))
    services = yaml.safe_load((out / "compose.yaml").read_text())["services"]
    assert "entrypoint" not in services["heavy"] and services["light"]["entrypoint"][0] == "/bin/sh"
    assert services["light"]["ports"] == [f"127.0.0.1:{light}:{light}"]
    assert cli("import", str(smollm2), "--as", "smollm2-135m-instruct-q4_1").returncode == 0
    project = f"llmctl-export-{os.getpid()}"
    base = [compose, "-p", project, "-f", str(out / "compose.yaml")]
    env = {**os.environ, **pod.env}
    try:
        up = subprocess.run([*base, "up", "-d"], capture_output=True, text=True, timeout=300, env=env, cwd=out)
        assert up.returncode == 0, up.stdout + up.stderr
        try:
            wait_for(lambda: _healthy(heavy) and _healthy(light), 180, "both servers healthy")
        except AssertionError:
            pytest.fail("the servers did not come up:\n" + "".join(
                pod.run("logs", f"{project}_{s}_1", check=False).stderr[-2000:] for s in services))
        r = cli("-f", str(f), "run", "--task", "summary", "--json", input="llmctl starts local LLM servers.")
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        assert answer["profile"] == "light" and answer["mode"] == "server" and answer["text"].strip(), answer
    finally:
        down = subprocess.run([*base, "down"], capture_output=True, text=True, timeout=300, env=env, cwd=out)
        pod.run("network", "rm", "-f", f"{project}_default", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert pod.names() == []
    assert not _healthy(light)
