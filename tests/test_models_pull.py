"""`llmctl pull` against a real Hub mirror (olah, two processes on loopback; see hub_mirror.py),
through the real CLI: aliases, quants, split files, whole repos, resume after Ctrl-C and
SIGKILL, checksums, the error cases, and a pulled model going `up` under llama-server."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .hub_mirror import HubMirror, LfsFile, find_olah, write_gguf
from .util import cli, free_port, port_is_free

pytestmark = [pytest.mark.slow]

SMOL_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
VLLM_REPO = "test-org/tiny-vllm"

CATALOG = f"""\
smollm-test: {{repo: {SMOL_REPO}, quant: Q4_1, description: "the real SmolLM2 135M, from the test mirror"}}
tiny-vllm: {{repo: {VLLM_REPO}, engine: vllm}}
"""


@pytest.fixture(scope="session")
def mirror(tmp_path_factory, smollm2):
    """The olah mirror with the test repos, for the whole session; stopped (process group
    killed) at the end."""
    olah = find_olah()
    if not olah:
        pytest.fail("olah is missing: python -m venv .venv-olah && .venv-olah/bin/pip install olah "
                    "(or set LLMCTL_TEST_OLAH to an olah-cli)")
    root = tmp_path_factory.mktemp("hub-mirror")
    data = root / "data"
    data.mkdir()
    q8 = write_gguf(data / "q8.gguf", file_type=7, context_length=4096, name="tiny q8")
    p1 = write_gguf(data / "p1.gguf", file_type=10, split=(0, 2))
    p2 = write_gguf(data / "p2.gguf", file_type=10, split=(1, 2))
    proj = write_gguf(data / "proj.gguf", arch="clip", file_type=1)
    lfs_content = write_gguf(data / "lfs.gguf", file_type=2, n=8192).read_bytes()
    corrupt = bytearray(lfs_content)
    corrupt[-1] ^= 0xFF
    m = HubMirror(root, olah)
    m.add_repo(SMOL_REPO, {
        SMOL_FILE: smollm2,
        "SmolLM2-135M-Instruct-Q8_0.gguf": q8,
        "SmolLM2-135M-Instruct-Q2_K-00001-of-00002.gguf": p1,
        "SmolLM2-135M-Instruct-Q2_K-00002-of-00002.gguf": p2,
        "mmproj-SmolLM2-F16.gguf": proj,
        "README.md": b"---\nlicense: apache-2.0\n---\nSmolLM2 135M for the tests\n",
    })
    m.add_repo(VLLM_REPO, {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        "model.safetensors": os.urandom(3 * 1024 * 1024),
        "original/params.json": b'{"dim": 64}',
    })
    m.add_repo("test-org/lfs-GGUF", {"model-Q4_0.gguf": LfsFile(lfs_content)})
    m.add_repo("test-org/corrupt-GGUF", {"model-Q4_0.gguf": LfsFile(lfs_content, served=bytes(corrupt))})
    m.add_repo("test-org/huge-GGUF", {"model-Q4_0.gguf": LfsFile(b"never stored", claimed_size=10**15)})
    try:
        m.start()
        yield m
    finally:
        m.stop()
    for p in m.procs:
        assert p.poll() is not None, "an olah process survived the mirror fixture"


@pytest.fixture
def hub(mirror, llmctl_home):
    """HF_ENDPOINT pointing at the mirror, and the test catalog in this test's LLMCTL_HOME."""
    cfg = llmctl_home / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "catalog.yaml").write_text(CATALOG)
    return {"HF_ENDPOINT": mirror.url, "HF_TOKEN": ""}


def pull_json(*args: str, env: dict) -> dict:
    r = cli("pull", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_alias_pull_list_show_then_noop(hub, mirror, smollm2, llmctl_home):
    """An alias resolves through the catalog to the repo's default quant, is pinned to the
    commit, verified by git blob id, listed and shown with its GGUF facts; pulling again is a
    fast no-op that downloads nothing."""
    r = cli("pull", "smollm-test", env=hub)
    assert r.returncode == 0, r.stderr
    assert "smollm-test-q4_1: pulled" in r.stdout and "verified by git-blob-sha1" in r.stdout
    assert "pulling smollm-test:Q4_1" in r.stderr  # plain progress lines when piped
    path = llmctl_home / "models" / "smollm-test-q4_1" / SMOL_FILE
    assert filecmp.cmp(path, smollm2, shallow=False)
    assert not (path.parent / ".pull").exists()

    [entry] = json.loads(cli("models", "list", "--json", env=hub).stdout)
    assert entry == {**entry, "name": "smollm-test-q4_1", "reference": "smollm-test:Q4_1", "quant": "Q4_1",
                     "size": smollm2.stat().st_size, "path": str(path), "revision": mirror.repos[SMOL_REPO],
                     "verified": "git-blob-sha1", "source": "pull", "repo": SMOL_REPO}
    table = cli("models", "list", env=hub).stdout
    assert "smollm-test-q4_1" in table and mirror.repos[SMOL_REPO][:12] in table

    show = json.loads(cli("models", "show", "smollm-test-q4_1", "--json", env=hub).stdout)
    assert show["gguf"]["architecture"] == "llama" and show["gguf"]["context_length"] == 8192
    assert show["gguf"]["quant_type"] == "Q4_1" and show["gguf"]["parameters"] == 134515008
    assert show["files"] == [{"path": SMOL_FILE, "size": smollm2.stat().st_size, "sha256": None,
                              "blob_id": show["files"][0]["blob_id"], "verified": "git-blob-sha1"}]
    text = cli("models", "show", "smollm-test-q4_1", env=hub).stdout
    assert "architecture" in text and "134.52 M" in text and "8192" in text

    gets = len(mirror.requests(SMOL_REPO, SMOL_FILE))
    before = path.stat()
    t0 = time.monotonic()
    again = pull_json("smollm-test", env=hub)
    elapsed = time.monotonic() - t0
    assert again["noop"] is True and again["transferred_bytes"] == 0 and "up to date" in again["note"]
    assert elapsed < 5, f"a no-op pull took {elapsed:.1f}s"
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(mirror.requests(SMOL_REPO, SMOL_FILE)) == gets  # not fetched again
    by_name = pull_json("smollm-test-q4_1", env=hub)  # a store name pulls its reference again
    assert by_name["noop"] is True and by_name["reference"] == "smollm-test:Q4_1"


def test_quant_choice_split_file_and_file_reference(hub, mirror, llmctl_home):
    """`alias:QUANT` picks that file; a split quant brings every part (its first part is the
    model's path); naming one part of a split file brings them all; mmproj files are no quant."""
    q8 = pull_json("smollm-test:Q8_0", env=hub)
    assert q8["name"] == "smollm-test-q8_0" and q8["quant"] == "Q8_0"
    assert [f["path"] for f in q8["files"]] == ["SmolLM2-135M-Instruct-Q8_0.gguf"]

    split = pull_json(f"hf:{SMOL_REPO}:q2_k", env=hub)
    parts = ["SmolLM2-135M-Instruct-Q2_K-00001-of-00002.gguf", "SmolLM2-135M-Instruct-Q2_K-00002-of-00002.gguf"]
    assert split["name"] == "test-org--smollm2-135m-instruct-gguf-q2_k" and split["reference"] == f"hf:{SMOL_REPO}:Q2_K"
    assert [f["path"] for f in split["files"]] == parts and split["path"] == parts[0]
    d = llmctl_home / "models" / split["name"]
    assert all((d / p).is_file() for p in parts)

    one = pull_json(f"hf:{SMOL_REPO}/{parts[1]}", env=hub)
    assert one["name"] == "test-org--smollm2-135m-instruct-gguf--smollm2-135m-instruct-q2_k"
    assert [f["path"] for f in one["files"]] == parts and one["quant"] == "Q2_K"

    listed = {e["name"]: e for e in json.loads(cli("models", "list", "--json", env=hub).stdout)}
    assert set(listed) == {"smollm-test-q8_0", split["name"], one["name"]}
    show = json.loads(cli("models", "show", split["name"], "--json", env=hub).stdout)
    assert show["gguf"]["split_parts"] == 2 and show["gguf"]["parameters"] == 2 * 4096


def test_whole_repo_pull(hub, mirror, llmctl_home):
    """`hf:ORG/REPO` (and an alias without a quant) bring every file, folders included; the
    model's path is the directory (what vLLM takes)."""
    res = pull_json(f"hf:{VLLM_REPO}", env=hub)
    d = llmctl_home / "models" / "test-org--tiny-vllm"
    assert res["name"] == "test-org--tiny-vllm" and res["path"] == "." and res["quant"] is None
    want = {"config.json", "tokenizer.json", "model.safetensors", "original/params.json"}
    assert {f["path"] for f in res["files"]} == want
    assert all((d / p).is_file() for p in want) and res["verified"] == "git-blob-sha1"
    origin = mirror.root / "mirrors" / "models" / VLLM_REPO
    assert filecmp.cmp(d / "model.safetensors", origin / "model.safetensors", shallow=False)
    [entry] = json.loads(cli("models", "list", "--json", env=hub).stdout)
    assert entry["path"] == str(d)
    f = llmctl_home / "vllm.yaml"  # as a vLLM profile's model: the directory
    f.write_text(f"profiles:\n  v: {{engine: vllm, model: 'hf:{VLLM_REPO}', port: 18998}}\n")
    shown = json.loads(cli("-f", str(f), "profiles", "show", "v", "--json", env=hub).stdout)
    assert shown["model_path"] == str(d)

    alias = pull_json("tiny-vllm", env=hub)
    assert alias["name"] == "tiny-vllm" and len(alias["files"]) == 4


def test_progress_on_a_terminal_shows_bytes_speed_and_time_left(hub, llmctl_home):
    """On a terminal (a pty here) the pull draws rich bars: bytes done of the total, the speed,
    the time left, and the verification at the end."""
    import pty
    import re

    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "llmctl", "pull", "smollm-test"], env={**os.environ, **hub,
                         "COLUMNS": "160"}, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "pulling smollm-test:Q4_1" in text
    assert re.search(r"98\.4/98\.4 MB", text), text[-2000:]
    assert re.search(r"\d+(\.\d+)? [kMG]?B/s", text) and re.search(r"\d:\d\d:\d\d", text)
    assert "verified by git-blob-sha1" in text


def _partial(home: Path, name: str, file: str) -> Path:
    return home / "models" / name / ".pull" / (file + ".incomplete")


def _start_pull(args: list[str], env: dict, tmp_path: Path, tag: str) -> subprocess.Popen:
    e = dict(os.environ)
    e.update(env)
    return subprocess.Popen([sys.executable, "-m", "llmctl", "pull", *args], env=e,
                            stdout=open(tmp_path / f"{tag}.out", "w"), stderr=open(tmp_path / f"{tag}.err", "w"))


def _wait_partial(part: Path, proc: subprocess.Popen, at_least: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            size = 0
        if size >= at_least:
            return size
        assert proc.poll() is None, "the pull ended before it could be interrupted"
        time.sleep(0.002)
    raise AssertionError("the partial file did not grow")


def test_interrupted_and_killed_pulls_resume_with_the_remainder(hub, mirror, smollm2, llmctl_home, tmp_path):
    """Ctrl-C keeps the partial file (exit 130, says how to resume); SIGKILL mid-file keeps it
    too; the next pull asks only for the rest (206 from the mirror) and verifies the whole."""
    total = smollm2.stat().st_size
    part = _partial(llmctl_home, "smollm-test-q4_1", SMOL_FILE)

    p = _start_pull(["smollm-test"], hub, tmp_path, "int")
    _wait_partial(part, p, 10_000_000)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 130
    err = (tmp_path / "int.err").read_text()
    assert "interrupted" in err and "resumes it" in err
    kept = part.stat().st_size
    assert 0 < kept < total

    ranges_before = [ln for ln in mirror.requests(SMOL_REPO, SMOL_FILE) if " 206 " in ln]
    p = _start_pull(["smollm-test"], hub, tmp_path, "kill")
    killed_at = _wait_partial(part, p, kept + 10_000_000)
    p.kill()
    assert p.wait(timeout=30) == -signal.SIGKILL
    kept2 = part.stat().st_size
    assert kept2 >= killed_at and kept2 < total
    assert "resuming at" in (tmp_path / "kill.err").read_text()

    res = pull_json("smollm-test", env=hub)
    assert res["noop"] is False
    assert res["resumed_bytes"] == kept2 and res["transferred_bytes"] == total - kept2
    assert res["verified"] == "git-blob-sha1"
    final = llmctl_home / "models" / "smollm-test-q4_1" / SMOL_FILE
    assert filecmp.cmp(final, smollm2, shallow=False) and not part.exists()
    ranges = [ln for ln in mirror.requests(SMOL_REPO, SMOL_FILE) if " 206 " in ln]
    assert len(ranges) == len(ranges_before) + 2  # the killed pull's and the last one's, both ranges


def test_killed_whole_repo_pull_keeps_the_finished_files(hub, mirror, smollm2, llmctl_home, tmp_path):
    """A multi-file pull killed mid-way: the files it had finished are not fetched again.
    (Through the origin olah, which sends files slowly and ignores Range: the small files are
    surely finished while the big one is still coming, and the big one starts over.)"""
    origin = {**hub, "HF_ENDPOINT": mirror.origin_url}
    name = "test-org--smollm2-135m-instruct-gguf"
    work = llmctl_home / "models" / name / ".pull"
    small = {rel: size for (repo, rel), size in mirror.sizes.items() if repo == SMOL_REPO and rel != SMOL_FILE}
    p = _start_pull([f"hf:{SMOL_REPO}"], origin, tmp_path, "repo")
    deadline = time.monotonic() + 60
    while not all((work / (rel + ".incomplete")).exists() and (work / (rel + ".incomplete")).stat().st_size == n
                  for rel, n in small.items()):
        assert p.poll() is None and time.monotonic() < deadline, "the pull ended before it could be killed"
        time.sleep(0.005)
    p.kill()
    p.wait(timeout=30)
    big_kept = (work / (SMOL_FILE + ".incomplete")).stat().st_size
    assert big_kept < smollm2.stat().st_size
    gets = {rel: len(mirror.requests(SMOL_REPO, rel, "origin")) for rel in small}

    res = pull_json(f"hf:{SMOL_REPO}", env=origin)
    assert len(res["files"]) == 6 and res["path"] == "." and res["quant"] is None
    assert res["transferred_bytes"] == smollm2.stat().st_size  # the big file, from 0 (no Range here)
    assert res["resumed_bytes"] == sum(small.values())  # the finished ones, re-verified from disk
    assert {rel: len(mirror.requests(SMOL_REPO, rel, "origin")) for rel in small} == gets
    assert not work.exists() and res["verified"] == "git-blob-sha1"
    assert filecmp.cmp(llmctl_home / "models" / name / SMOL_FILE, smollm2, shallow=False)


def test_a_mirror_ignoring_range_requests_restarts_the_file(hub, mirror, smollm2, llmctl_home, tmp_path):
    """The origin olah answers a Range request with the whole file (200): the kept partial is
    dropped, the file comes whole, and the checksum is still right."""
    origin = {**hub, "HF_ENDPOINT": mirror.origin_url}
    part = _partial(llmctl_home, "smollm-test-q4_1", SMOL_FILE)
    p = _start_pull(["smollm-test"], origin, tmp_path, "origin")
    _wait_partial(part, p, 10_000_000)
    p.kill()
    p.wait(timeout=30)
    kept = part.stat().st_size
    r = cli("pull", "smollm-test", "--json", env=origin)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert "resuming at" in r.stderr and "ignored the resume request; starting over" in r.stderr
    assert res["resumed_bytes"] == 0 and res["transferred_bytes"] == smollm2.stat().st_size > kept
    assert filecmp.cmp(llmctl_home / "models" / "smollm-test-q4_1" / SMOL_FILE, smollm2, shallow=False)
    assert res["verified"] == "git-blob-sha1"


def test_sha256_from_lfs_metadata_and_checksum_mismatch(hub, mirror, llmctl_home):
    """LFS files are verified against the sha256 the listing gives; a mirror serving other
    bytes fails the check, the file is removed, and the message says so."""
    good = pull_json("hf:test-org/lfs-GGUF:Q4_0", env=hub)
    assert good["verified"] == "sha256" and good["files"][0]["sha256"]
    f = llmctl_home / "models" / good["name"] / "model-Q4_0.gguf"
    assert sha256(f) == good["files"][0]["sha256"]

    r = cli("pull", "hf:test-org/corrupt-GGUF:Q4_0", env=hub)
    assert r.returncode == 1, r.stderr
    assert "does not match the Hub's sha256" in r.stderr and "the file was removed" in r.stderr
    assert "run the same `llmctl pull` again" in r.stderr
    d = llmctl_home / "models" / "test-org--corrupt-gguf-q4_0"
    assert not [p for p in d.rglob("*") if p.is_file()] if d.exists() else True
    assert "test-org--corrupt-gguf-q4_0" not in cli("models", "list", env=hub).stdout


def test_not_found_errors_name_the_next_step(hub, mirror):
    cases = [
        (["nosuch-model"], 6, "not a catalog alias"),
        (["hf:test-org/nope:Q4_0"], 6, f"repo test-org/nope not found on {mirror.url}"),
        ([f"hf:{SMOL_REPO}/nope.gguf"], 6, "has no file 'nope.gguf'"),
        (["smollm-test", "--revision", "no-such-branch"], 6, "has no revision 'no-such-branch'"),
        (["./local.gguf"], 2, "llmctl import ./local.gguf --as NAME"),
    ]
    for args, code, message in cases:
        r = cli("pull", *args, env=hub)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "hint:" in r.stderr or code == 2


def test_wrong_quant_lists_the_quants_there(hub, mirror):
    r = cli("pull", "smollm-test:Q9_9", env=hub)
    assert r.returncode == 6, r.stderr
    assert "has no Q9_9 GGUF file; its quants: Q2_K, Q4_1, Q8_0" in r.stderr  # mmproj's F16 is no quant
    assert "llmctl pull smollm-test:Q2_K" in r.stderr


def test_mirror_down(hub, mirror, llmctl_home):
    """Nothing listening at HF_ENDPOINT: a clear error, fast; a model already pulled stays usable."""
    down = {**hub, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    t0 = time.monotonic()
    r = cli("pull", "smollm-test:Q8_0", env=down)
    assert r.returncode == 1 and time.monotonic() - t0 < 15
    assert f"cannot reach {down['HF_ENDPOINT']}" in r.stderr and "HF_ENDPOINT" in r.stderr.split("hint:")[1]

    pull_json("smollm-test:Q8_0", env=hub)
    r = cli("pull", "smollm-test:Q8_0", env=down)
    assert r.returncode == 0 and "could not check for a newer revision" in r.stdout


def test_not_enough_space_refuses_before_downloading(hub, mirror, llmctl_home):
    r = cli("pull", "hf:test-org/huge-GGUF:Q4_0", env=hub)
    assert r.returncode == 1, r.stderr
    assert "needs 1000.0 TB more on" in r.stderr and "free" in r.stderr and "hint: free some space" in r.stderr
    assert not (llmctl_home / "models" / "test-org--huge-gguf-q4_0").exists()


def test_rm(hub, mirror, llmctl_home):
    pull_json("smollm-test:Q8_0", env=hub)
    r = cli("models", "rm", "smollm-test-q8_0", env=hub)
    assert r.returncode == 0 and "smollm-test-q8_0: removed" in r.stdout
    assert not (llmctl_home / "models" / "smollm-test-q8_0").exists()
    assert json.loads(cli("models", "list", "--json", env=hub).stdout) == []
    r = cli("models", "rm", "smollm-test-q8_0", env=hub)
    assert r.returncode == 6 and "no model named 'smollm-test-q8_0'" in r.stderr


@pytest.mark.engine
def test_profile_with_an_alias_goes_up_once_pulled(hub, mirror, llmctl_home, tmp_path, ports, llama_server,
                                                   monkeypatch):
    """`up` with an alias not pulled yet fails before starting, saying which pull to run;
    `up --pull` pulls it and the real llama-server serves the pulled file; ensure_model() is
    then a no-op."""
    port = ports()
    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  light: {{model: smollm-test, port: {port}, ctx_size: 1024}}\n")
    env = {**hub, "LLMCTL_PROFILES": str(f)}
    r = cli("up", "light", env=env)
    assert r.returncode == 6, r.stderr
    assert "run `llmctl pull smollm-test`" in r.stderr and f"{f}:2" in r.stderr
    assert port_is_free(port)

    r = cli("up", "light", "--pull", env=env)  # pulls the alias, then starts the server
    path = llmctl_home / "models" / "smollm-test-q4_1" / SMOL_FILE
    try:
        assert r.returncode == 0, r.stderr
        assert path.exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
        [st] = json.loads(cli("status", "--json", env=env).stdout)
        assert st["state"] == "running" and st["model"] == "smollm-test"
        import psutil

        assert str(path) in psutil.Process(st["pid"]).cmdline()
    finally:
        assert cli("down", env=env).returncode == 0

    from llmctl import load_profiles
    from llmctl.models.progress import PullProgress
    from llmctl.models.pull import ensure_model
    from llmctl.paths import Paths

    monkeypatch.setenv("HF_ENDPOINT", mirror.url)
    [profile] = load_profiles([str(f)]).profiles.values()
    seen: list[str] = []

    class Record(PullProgress):
        def file_end(self, path, note):
            seen.append(path)

    assert ensure_model(profile, Paths.from_env(), progress=Record()) == path and seen == []  # already there
    assert port_is_free(port)


# -- `llmctl plan` before the pull: the estimate from the Hub ---------------------------------
PLAN_PROFILE = "profiles:\n  small: {{model: {model}, backend: vulkan, gpu_layers: 99, ctx_size: 2048, port: 18997}}\n"


def plan_json(f: Path, env: dict, name: str = "small") -> tuple[int, dict]:
    r = cli("-f", str(f), "plan", name, "--json", env=env)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_plan_estimates_from_the_hub_before_the_pull(hub, mirror, smollm2, llmctl_home, tmp_path):
    """An alias not pulled yet is estimated from the Hub: the listing's size and the header read
    over Range requests only (a few blocks of the 98 MB file, nothing stored); once pulled,
    the local estimate is exactly the same."""
    from llmctl.models.remote_gguf import BLOCK

    f = tmp_path / "llmctl.yaml"
    f.write_text(PLAN_PROFILE.format(model="smollm-test"))
    gets_before = len(mirror.requests(SMOL_REPO, SMOL_FILE))
    code, plan = plan_json(f, hub)
    assert code == 0
    [remote] = plan["profiles"]
    assert remote["method"] == "hub" and remote["total"], remote
    rev = mirror.repos[SMOL_REPO]
    assert f"estimated from the Hub ({SMOL_REPO}@{rev[:12]}, not pulled yet)" in remote["notes"]
    assert remote["weights"] == smollm2.stat().st_size  # all 30 layers, size from the listing
    assert remote["kv_cache"] == 30 * 3 * (64 + 64) * 2 * 2048 and remote["block_count"] == 30
    assert not (llmctl_home / "models" / "smollm-test-q4_1").exists()  # nothing pulled

    # only `plan` asks the Hub: the estimate `up` and the gateway use never waits on the network
    from llmctl import load_profiles
    from llmctl.gpu.estimate import estimate_profile

    before = len(mirror.requests(SMOL_REPO, SMOL_FILE))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in hub.items():
            mp.setenv(k, v)
        local_only = estimate_profile(load_profiles([str(f)]).profiles["small"])
    assert local_only.total is None and len(mirror.requests(SMOL_REPO, SMOL_FILE)) == before

    # what the mirror saw for the model file: GETs with Range only (206), few enough that
    # even at one block each they are a small part of the file
    seen = mirror.requests(SMOL_REPO, SMOL_FILE)[gets_before:]
    assert seen and all(" 206" in ln for ln in seen), seen
    assert all(f"/resolve/{rev}/" in ln for ln in seen)
    assert len(seen) * BLOCK < smollm2.stat().st_size / 10, seen

    table = cli("-f", str(f), "plan", "small", env=hub)
    assert table.returncode == 0 and "hub" in table.stdout and "not pulled yet" in table.stderr

    assert cli("pull", "smollm-test", env=hub).returncode == 0
    code, plan = plan_json(f, hub)
    [local] = plan["profiles"]
    assert code == 0 and local["method"] == "gguf"
    assert (local["weights"], local["kv_cache"], local["total"]) == \
        (remote["weights"], remote["kv_cache"], remote["total"])
    assert {k: v for k, v in local.items() if k not in ("method", "notes")} == \
        {k: v for k, v in remote.items() if k not in ("method", "notes")}


def test_plan_of_a_split_model_from_the_hub_sums_the_parts(hub, mirror, llmctl_home, tmp_path, monkeypatch):
    """A split quant: the header comes from part 1, the size is that of both parts."""
    f = tmp_path / "llmctl.yaml"
    f.write_text(PLAN_PROFILE.format(model=f"'hf:{SMOL_REPO}:Q2_K'"))
    parts = [f"SmolLM2-135M-Instruct-Q2_K-0000{i}-of-00002.gguf" for i in (1, 2)]
    code, plan = plan_json(f, hub)
    [est] = plan["profiles"]
    assert code == 0 and est["method"] == "hub", est
    both = sum(mirror.sizes[(SMOL_REPO, p)] for p in parts)
    assert est["weights"] == both > mirror.sizes[(SMOL_REPO, parts[0])]
    assert est["block_count"] == 1 and est["ctx"] == 2048

    # the same through the Range reader in-process: only part 1 is read, a block at most
    from llmctl.models.remote_gguf import hub_layout
    from llmctl.paths import Paths

    for k, v in hub.items():
        monkeypatch.setenv(k, v)
    remote = hub_layout(f"hf:{SMOL_REPO}:Q2_K", Paths.from_env())
    assert remote.parts == parts and remote.path == parts[0] and remote.layout.file_size == both
    assert remote.requests == 1 and remote.received == mirror.sizes[(SMOL_REPO, parts[0])]


def test_plan_with_the_hub_down_is_unknown(hub, mirror, llmctl_home, tmp_path):
    """Nothing listening at HF_ENDPOINT: the estimate is unknown, the note says why, and plan's
    exit code is what it is for any unknown estimate (a missing local file)."""
    down = {**hub, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    f = tmp_path / "llmctl.yaml"
    f.write_text(PLAN_PROFILE.format(model="smollm-test")
                 + "  gone: {model: ./missing.gguf, backend: vulkan, port: 18996}\n")
    t0 = time.monotonic()
    code, plan = plan_json(f, down)
    assert time.monotonic() - t0 < 30
    [est] = plan["profiles"]
    assert est["method"] == "unknown" and est["total"] is None
    notes = " ".join(est["notes"])
    assert "run `llmctl pull smollm-test`" in notes and f"cannot reach {down['HF_ENDPOINT']}" in notes
    assert plan["unknown"] == ["small"] and plan["need"] is None
    gone_code, gone = plan_json(f, down, "gone")
    assert gone["profiles"][0]["method"] == "unknown" and code == gone_code == 0


def test_plan_through_a_server_ignoring_range_gives_up_after_one_block(hub, mirror, llmctl_home, tmp_path):
    """The origin olah answers Range requests with the whole file (200): the estimate reads one
    block at most, gives up (unknown, saying why) and downloads nothing more."""
    from llmctl.models.remote_gguf import BLOCK, RangeFile, RangeNotSupported

    origin = {**hub, "HF_ENDPOINT": mirror.origin_url}
    f = tmp_path / "llmctl.yaml"
    f.write_text(PLAN_PROFILE.format(model="smollm-test"))
    code, plan = plan_json(f, origin)
    [est] = plan["profiles"]
    assert code == 0 and est["method"] == "unknown" and "ignores HTTP Range requests" in " ".join(est["notes"])

    url = f"{mirror.origin_url}/{SMOL_REPO}/resolve/main/{SMOL_FILE}"
    reader = RangeFile(url, 98_000_000, {})
    with pytest.raises(RangeNotSupported):
        reader.read(24)
    assert reader.requests == 1 and BLOCK <= reader.received <= BLOCK + (1 << 20)
