"""The docker launcher against a real container engine: podman with the runc runtime, run with a
configuration, storage and image of the tests' own (tests/helpers/podman_store.py says how and
why), through the real CLI, the real llama-server inside the container and the tiny models.

Both spellings run: ``command: podman`` and ``command: docker`` where ``docker`` is podman-docker's
(a podman under Docker's name). What a real engine cannot be made to do here stays on
tests/helpers/fake_docker.py (tests/test_docker.py); its docstring lists each case and why.

Every test checks that no container is left in the tests' storage; the session removes the
image and the storage at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from .helpers.podman_store import Podman, make
from .util import cli, port_is_free, wait_for

REPO = Path(__file__).resolve().parents[1]
NO_PODMAN = "podman is not installed: `scripts/setup.sh --tests` installs podman, runc and podman-docker (as root)"

pytestmark = [pytest.mark.container, pytest.mark.engine, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("podman") is None, reason=NO_PODMAN)]


@pytest.fixture(scope="session")
def podman_store(tmp_path_factory, llama_server):
    pod = make(tmp_path_factory.mktemp("podman"), Path(llama_server).resolve())
    yield pod
    left = pod.clean()
    pod.remove_images()
    shutil.rmtree(pod.base, ignore_errors=True)
    assert not left, f"containers left in the tests' storage at the end: {left}"


@pytest.fixture
def podman(podman_store: Podman, monkeypatch):
    """The tests' podman in this test's environment (and so in llmctl's, the keeper's and the
    container client's); fails the test if it leaves a container behind."""
    for k, v in podman_store.env.items():
        monkeypatch.setenv(k, v)
    assert podman_store.names() == [], "a container from an earlier test is in the way"
    yield podman_store
    left = podman_store.clean()
    assert not left, f"containers left behind: {left}"


def podman_docker() -> str | None:
    """podman-docker's `docker` (a script that runs podman), wherever it is on this machine: a
    `docker` earlier on PATH may be Docker's own client, with no daemon to talk to."""
    for candidate in (shutil.which("docker"), "/usr/bin/docker"):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        r = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
        if r.stdout.startswith("podman version"):
            return candidate
    return None


@pytest.fixture
def docker_is_podman(tmp_path, monkeypatch):
    """`docker` on PATH is podman-docker's."""
    found = podman_docker()
    if found is None:
        pytest.skip("podman-docker is not installed (no `docker` that is podman): `scripts/setup.sh --tests`")
    bindir = tmp_path / "docker-bin"
    bindir.mkdir()
    (bindir / "docker").symlink_to(found)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return found


def write_profiles(tmp_path: Path, pod: Podman, model: Path, port: int, command: str = "podman",
                   extra: str = "", options: tuple[str, ...] = ()) -> dict:
    """One containerised profile, `light`, on the tests' image."""
    opts = json.dumps([*options, *pod.options])
    f = tmp_path / "podman.yaml"
    f.write_text(f"profiles:\n  light:\n    model: {model}\n    port: {port}\n    backend: cpu\n"
                 f"    stop_timeout: 3\n    launcher: docker\n{extra}"
                 f"    docker: {{image: {pod.image}, command: {command}, options: {opts}}}\n")
    return {"LLMCTL_PROFILES": str(f)}


def status(env: dict, name: str = "light") -> dict:
    return next(s for s in json.loads(cli("status", "--json", env=env).stdout) if s["name"] == name)


def log_text(env: dict) -> str:
    return Path(status(env)["log"]).read_text()


def engine_under(init_pid: int) -> psutil.Process:
    """The llama-server under the container's init (State.Pid is `--init`'s catatonit)."""
    [server] = [p for p in psutil.Process(init_pid).children() if "llama-server" in " ".join(p.cmdline())]
    return server


def gone(pid: int, create_time: float) -> bool:
    try:
        return psutil.Process(pid).create_time() != create_time
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("command", ["podman", "docker"])
def test_up_status_run_logs_down(tmp_path, podman, smollm2, ports, command, request):
    """`docker: {command: podman}` and `command: docker` (podman-docker): a named container comes
    up healthy; status shows its state and the pid `inspect` gives (the container's init, not
    the client); run answers through it; logs are the container's own; down leaves nothing."""
    if command == "docker":
        request.getfixturevalue("docker_is_podman")
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port, command)
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    st = status(env)
    box = st["container"]
    assert (st["state"], box["name"], box["Running"], box["Status"]) == ("running", "llmctl-light", True, "running")
    init = box["Pid"]
    assert init == podman.state("llmctl-light")["Pid"] and init != st["pid"]
    assert init not in {p.pid for p in psutil.Process(st["pid"]).children(recursive=True)}  # not the client's
    server = engine_under(init)
    born = server.create_time()

    r = cli("run", "--profile", "light", "-n", "8", "--json", "Say hello.", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["profile"], d["mode"]) == ("light", "server") and d["text"].strip() and d["tokens_out"] > 0

    r = cli("logs", "light", "-n", "40", env=env)
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr  # `podman logs` replays the server's stderr on its own stderr
    assert f"listening on http://0.0.0.0:{port}" in said  # the server inside, bound to every interface
    assert "[llmctl " not in said  # `podman logs`, not llmctl's log file

    r = cli("down", "light", env=env)
    assert r.returncode == 0, r.stderr
    assert podman.names() == [] and port_is_free(port)
    assert gone(server.pid, born) and not psutil.pid_exists(init)
    assert status(env)["state"] == "stopped"


@pytest.mark.parametrize("restart", ["on-failure", "no"])
def test_server_killed_inside_the_container(tmp_path, podman, smollm2, ports, restart):
    """SIGKILL of the llama-server inside the container (its host pid): the container exits 137,
    as `podman inspect` says; on-failure starts a new container, `no` leaves it failed."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port, extra=f'    restart: "{restart}"\n')
    assert cli("up", "light", env=env).returncode == 0
    init = status(env)["container"]["Pid"]
    os.kill(engine_under(init).pid, signal.SIGKILL)
    if restart == "no":
        st = wait_for(lambda: (s := status(env))["state"] == "failed" and s, 60, "the failure")
        assert st["exit_code"] == 137 and st["restarts"] == 0 and podman.names() == []
    else:
        st = wait_for(lambda: (s := status(env))["state"] == "running" and s["restarts"] == 1 and s, 60,
                      "the restart")
        assert st["container"]["Pid"] not in (None, init) and st["container"]["Running"] is True
    log = log_text(env)
    assert "server exited (code 137)" in log and "container llmctl-light exited with code 137 (`podman inspect`)" in log
    assert cli("down", "light", env=env).returncode == 0
    assert podman.names() == [] and port_is_free(port)


def test_container_that_exits_at_start_fails_with_its_last_log_lines(tmp_path, podman, smollm2, ports):
    """llama-server inside refuses a flag and exits 1: `up` fails at once with the server's own
    words from the log; the exit code is the container's; the container is removed."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port, extra="    args: {no-such-flag-xyz: 1}\n")
    r = cli("up", "light", env=env)
    assert r.returncode == 8, r.stderr
    assert "light failed to start" in r.stderr and "no-such-flag-xyz" in r.stderr
    st = status(env)
    assert st["state"] == "failed" and st["exit_code"] == 1
    assert "container llmctl-light exited with code 1 (`podman inspect`)" in log_text(env)
    assert podman.names() == []


def test_runtime_failure_before_the_start_is_reported_with_its_error(tmp_path, podman, smollm2, ports):
    """runc refuses the container before anything in it runs (an open-files limit above the
    kernel's fs.nr_open, which no capability lifts). podman's inspect then says ExitCode 0 for
    the container that never ran; `up` used to report "exited with code 0". It reports the
    runtime's error and the client's exit code, 126."""
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    too_many = f"nofile={nr_open * 2}:{nr_open * 2}"
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port, options=("--ulimit", too_many))
    r = cli("up", "light", env=env)
    assert r.returncode == 8, r.stderr
    assert "container llmctl-light never started: runc" in r.stderr and "rlimit" in r.stderr
    assert "exited with code 126" in r.stderr and "exited with code 0" not in r.stderr
    st = status(env)
    assert st["state"] == "failed" and st["exit_code"] == 126 and "never started" in st["message"]
    assert "the exit status is the podman client's" in log_text(env)
    assert podman.names() == []


def test_oom_kill_under_a_memory_limit(tmp_path, podman, smollm2, ports):
    """A 48 MiB container, and a model (98 MB) read into memory rather than mapped: the kernel's
    OOM killer ends the server while it loads (exit 137). The runtime enforces the limit here,
    but podman 4.3 on this cgroup-v1 host leaves State.OOMKilled false, so llmctl names the
    likely OOM kill from the SIGKILL under a memory limit (the OOMKilled report itself is
    covered on tests/helpers/fake_docker.py)."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port, extra='    restart: "no"\n    args: {load-mode: none}\n',
                         options=("--memory", "48m"))
    r = cli("up", "light", env=env)
    assert r.returncode == 8, r.stderr
    st = status(env)
    assert st["state"] == "failed" and st["exit_code"] == 137
    assert "OOM" in st["message"] and "OOM" in r.stderr
    assert podman.names() == []


def test_container_left_by_a_killed_keeper_is_removed_by_down(tmp_path, podman, smollm2, ports):
    """The keeper and the `podman run` client are SIGKILLed: the container runs on (conmon
    holds it, not the client). `down` finds it by name, stops and removes it."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port)
    assert cli("up", "light", env=env).returncode == 0
    st = status(env)
    record = json.loads((Path(os.environ["LLMCTL_HOME"]) / "state" / "light.json").read_text())
    init = st["container"]["Pid"]
    for pid in (record["keeper_pid"], st["pid"]):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(st["pid"]) or psutil.Process(st["pid"]).status() == "zombie",
             what="the client's death")
    assert podman.state("llmctl-light")["Running"] is True and psutil.pid_exists(init)
    r = cli("down", "light", env=env)
    assert r.returncode == 0, r.stderr
    assert podman.names() == [] and port_is_free(port) and not psutil.pid_exists(init)


def test_client_killed_while_the_container_runs(tmp_path, podman, smollm2, ports):
    """Only the `podman run` client is SIGKILLed: the container runs on without it. The keeper
    sees the client's death, stops and removes the container by name, and on-failure starts a
    new one."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port)
    assert cli("up", "light", env=env).returncode == 0
    first = status(env)
    init = first["container"]["Pid"]
    os.kill(first["pid"], signal.SIGKILL)
    st = wait_for(lambda: (s := status(env))["state"] == "running" and s["restarts"] == 1 and s, 60, "the restart")
    assert st["pid"] != first["pid"] and st["container"]["Pid"] != init and not psutil.pid_exists(init)
    log = log_text(env)
    assert "server exited (signal 9)" in log
    assert "but container llmctl-light still runs: stopping and removing it" in log
    assert cli("down", "light", env=env).returncode == 0
    assert podman.names() == [] and port_is_free(port)


def test_stale_container_is_removed_and_a_running_one_refused(tmp_path, podman, smollm2, ports):
    """A container of the profile's name that never ran (`podman create`) is removed before the
    start; one that runs and is not llmctl's is refused, and left running."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port)
    podman.run("create", "--name", "llmctl-light", *podman.options, podman.image, "--version")
    assert podman.state("llmctl-light")["Status"] == "created"
    r = cli("up", "light", env=env)
    assert r.returncode == 0, r.stderr
    assert cli("down", "light", env=env).returncode == 0 and podman.names() == []
    podman.run("run", "-d", "--name", "llmctl-light", *podman.options, "--entrypoint", "/bin/sleep",
               podman.image, "300")
    try:
        r = cli("up", "light", env=env)
        assert r.returncode == 8 and "already running outside llmctl" in r.stderr
        assert podman.state("llmctl-light")["Running"] is True  # not ours: untouched
    finally:
        podman.run("rm", "-f", "-t", "0", "llmctl-light")


def test_port_taken_on_the_host_is_named_before_the_container_starts(tmp_path, podman, smollm2, ports):
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = cli("up", "light", env=env)
        assert podman.names() == []  # no container was even created
    assert r.returncode == 7
    assert f"port {port}" in r.stderr and f"pid {os.getpid()}" in r.stderr


def test_status_counts_vram_of_the_container_processes(tmp_path, podman, smollm2, ports, monkeypatch):
    """The container's processes are not the client's children: status sums the GPU memory of
    the tree under the container's State.Pid. No GPU here: a stand-in nvidia-smi (its GPU line
    the committed H200 capture) reports the real llama-server inside the container."""
    port = ports()
    env = write_profiles(tmp_path, podman, smollm2, port)
    assert cli("up", "light", env=env).returncode == 0
    try:
        server = engine_under(status(env)["container"]["Pid"])
        gpus = next((REPO / "tests" / "data" / "gpu").glob("nvidia-smi-gpus*.csv")).read_text()
        uuid = gpus.splitlines()[0].split(",")[1].strip()
        bindir = tmp_path / "smi-bin"
        bindir.mkdir()
        (bindir / "nvidia-smi").write_text(
            "#!/bin/sh\ncase \"$1\" in\n"
            f"  --query-gpu=*) cat <<'EOF'\n{gpus.strip()}\nEOF\n;;\n"
            f"  --query-compute-apps=*) echo '{server.pid}, {uuid}, 1234'; echo '1, {uuid}, 99';;\nesac\n")
        (bindir / "nvidia-smi").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        st = status(env)
        assert st["vram_mib"] == 1234 and st["gpus"] == [0]
    finally:
        assert cli("down", "light", env=env).returncode == 0


def test_doctor_names_the_container_engine_version_and_runtime(tmp_path, podman, docker_is_podman):
    """`doctor` says which engine answers as `docker` and as `podman`, its version and the
    runtime it uses (runc, from the tests' containers.conf)."""
    version = podman.run("version", "--format", "{{.Client.Version}}").stdout.strip()
    info = json.loads(cli("doctor", "--json").stdout)
    found = {c["command"]: c for c in info["containers"]}
    for command in ("podman", "docker"):
        c = found[command]
        assert (c["engine"], c["version"], c["runtime"]) == ("podman", version, "runc"), c
        assert c["runtime_version"] and "error" not in c
    assert found["docker"]["path"] == str(tmp_path / "docker-bin" / "docker")  # podman-docker's, via PATH
    text = cli("doctor").stdout
    assert f"podman: {found['podman']['path']}: podman {version}, runtime runc " in text
    assert f"docker: {found['docker']['path']}: podman {version}, runtime runc " in text


# -- the BestBox seed setup, with CPU stand-ins ------------------------------------------------
def bestbox_on_cpu(tmp_path: Path, pod: Podman, heavy_model: Path, light_model: Path,
                   heavy_port: int, light_port: int) -> dict:
    """profiles/bestbox.yaml with its GPU parts swapped for what runs here: both on the CPU
    backend with tiny models, light in the tests' image (its ROCm devices stay in the argv test,
    tests/test_docker.py), smaller contexts; light does not restart, so that its task's fallback
    is seen while it is down. Tasks unchanged."""
    seed = yaml.safe_load((REPO / "profiles" / "bestbox.yaml").read_text())
    heavy, light = seed["profiles"]["heavy"], seed["profiles"]["light"]
    assert light["launcher"] == "docker" and heavy.get("launcher", "native") == "native"
    for prof, model, port in ((heavy, heavy_model, heavy_port), (light, light_model, light_port)):
        prof.update(model=str(model), port=port, backend="cpu", ctx_size=2048, start_timeout=120)
        prof.pop("devices", None)
        prof.pop("gpu_layers", None)
    light["restart"] = "no"
    light["docker"].update(image=pod.image, command="podman", devices=[],
                           options=[*light["docker"].get("options", []), *pod.options])
    f = tmp_path / "bestbox-cpu.yaml"
    f.write_text(yaml.safe_dump(seed, sort_keys=False))
    return {"LLMCTL_PROFILES": str(f)}


def ask(env: dict, task: str) -> tuple[dict, str]:
    r = cli("run", "--task", task, "-n", "8", "--json", "The parcel arrived broken; I want a refund.", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_bestbox_seed_end_to_end_on_cpu(tmp_path, podman, smollm2, gemma, ports):
    """`up heavy light` (heavy native, light in a container); classify -> light, reasoning ->
    heavy; light's container killed -> classify falls back to heavy; `down` leaves nothing."""
    hp, lp = ports(), ports()
    env = bestbox_on_cpu(tmp_path, podman, gemma, smollm2, hp, lp)
    r = cli("up", "heavy", "light", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    heavy = status(env, "heavy")
    assert heavy["state"] == "running" and heavy.get("container") is None  # native
    assert status(env, "light")["container"]["Running"] is True

    d, _ = ask(env, "classify")
    assert (d["profile"], d["mode"]) == ("light", "server") and d["tokens_out"] > 0
    d, _ = ask(env, "reasoning")
    assert (d["profile"], d["mode"]) == ("heavy", "server") and d["tokens_out"] > 0

    podman.run("kill", "llmctl-light")
    wait_for(lambda: status(env, "light")["state"] == "failed", 60, "light's failure")
    d, notes = ask(env, "classify")
    assert (d["profile"], d["mode"]) == ("heavy", "server") and "fallback" in notes

    r = cli("down", "--all", env=env)
    assert r.returncode == 0, r.stderr
    assert podman.names() == [] and port_is_free(hp) and port_is_free(lp)
    assert {s["state"] for s in json.loads(cli("status", "--json", env=env).stdout)} == {"stopped"}
