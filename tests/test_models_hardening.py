"""The model store under attack and under faults, through the real CLI: a Hub (or mirror) that
lists paths outside the model's folder, names from the command line that are not model names,
`import --force` of a store file onto itself, a full disk, a read-only home, and links out of
the store.

The hostile Hub is tests/helpers/standin_hub.py, a stand-in: git (and so the olah mirror) cannot
hold the file names a hostile mirror can list. The full disk is a 1 MiB tmpfs and the read-only
home a read-only bind mount (root can write through chmod 0500); both tests skip, saying why,
where mounting is not allowed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers.standin_hub import StandInHub
from .util import cli

GGUF = b"GGUF" + bytes(range(256)) * 8  #: a small file with the GGUF magic
SAFE_REPO = "test-org/safe"


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()} if root.exists() else set()


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


def _pull(hub: StandInHub, ref: str, *args: str) -> subprocess.CompletedProcess:
    return cli("pull", ref, *args, env={"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"})


# -- a Hub listing paths outside the model's folder --------------------------------------------
@pytest.mark.parametrize("path, why", [
    ("{outside}/abs-Q4_0.gguf", "absolute path"),
    ("../../escape-Q4_0.gguf", "`..` part"),
    ("sub/../../../escape-Q4_0.gguf", "`..` part"),
    ("..\\escape-Q4_0.gguf", "backslash"),
    ("nul\x00-Q4_0.gguf", "control character"),
    ("line\nbreak-Q4_0.gguf", "control character"),
    ("manifest.json", "llmctl's own manifest.json"),
])
def test_a_hub_listing_unsafe_paths_gets_nothing_written(path, why, tmp_path, llmctl_home):
    """Each listing is refused before any file is requested or written: nothing new appears
    anywhere under the test's folder (but the pull lock in the home's run/), and no model."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = path.format(outside=outside)
    before = _files(tmp_path)
    with StandInHub({"test-org/evil": {path: GGUF}}) as hub:
        r = _pull(hub, "hf:test-org/evil")
        asked = hub.file_requests()
    _no_traceback(r)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "will not write" in r.stderr and why in r.stderr and "nothing was written" in r.stderr
    assert asked == []
    new = {p for p in _files(tmp_path) - before if not p.is_relative_to(llmctl_home / "run")}
    assert new == set(), new
    assert not (llmctl_home / "models" / "test-org--evil").exists()


def test_links_planted_in_a_model_folder_are_not_followed(tmp_path, llmctl_home):
    """The stand-in Hub serves a safe repo, which pulls and verifies; then a link planted in the
    model's folder (a sub-folder, then the partial files' folder) leads outside: the next pull
    is refused, and the folder the links lead to stays empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    with StandInHub({SAFE_REPO: {"model-Q4_0.gguf": GGUF, "sub/notes.txt": b"first"}}) as hub:
        r = _pull(hub, f"hf:{SAFE_REPO}")
        _no_traceback(r)
        assert r.returncode == 0 and "verified by git-blob-sha1" in r.stdout, r.stdout + r.stderr
        model = llmctl_home / "models" / "test-org--safe"
        assert (model / "model-Q4_0.gguf").read_bytes() == GGUF and (model / "sub" / "notes.txt").exists()

        shutil.rmtree(model / "sub")
        (model / "sub").symlink_to(outside)
        r = _pull(hub, f"hf:{SAFE_REPO}", "--force")
        _no_traceback(r)
        assert r.returncode == 1 and "outside the model's folder" in r.stderr, r.stdout + r.stderr
        assert str(model / "sub") in r.stderr

        (model / "sub").unlink()
        (model / ".pull").symlink_to(outside)
        r = _pull(hub, f"hf:{SAFE_REPO}", "--force")
        _no_traceback(r)
        assert r.returncode == 1 and str(model / ".pull") in r.stderr, r.stdout + r.stderr
    assert list(outside.iterdir()) == []


# -- names from the command line ---------------------------------------------------------------
@pytest.fixture
def store(tmp_path, llmctl_home) -> Path:
    """A store with one imported model, ``keep``, and a planted manifest just outside it."""
    src = tmp_path / "keep.gguf"
    src.write_bytes(GGUF)
    r = cli("import", str(src), "--as", "keep")
    assert r.returncode == 0, r.stderr
    (llmctl_home / "manifest.json").write_text(json.dumps(
        {"name": "planted", "path": "x.gguf", "reference": "r", "size": 1, "source": "import"}))
    return llmctl_home / "models"


BAD_NAMES = ["", ".", "..", "../models", "/tmp", "keep/", "a/b", "x" * 300, "ok\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_models_rm_refuses_what_is_not_a_model_name(name, store):
    """`models rm ""` (an unset shell variable) deleted the whole store and exited 0."""
    r = cli("models", "rm", "keep", name)
    _no_traceback(r)
    assert r.returncode == 2 and "is not a model name" in r.stderr, r.stderr
    assert (store / "keep" / "manifest.json").exists(), "a name was acted on before all were checked"
    assert (store.parent / "manifest.json").exists()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_models_show_refuses_what_is_not_a_model_name(name, store):
    """`models show ..` read a manifest from outside the store."""
    r = cli("models", "show", name, "--json")
    _no_traceback(r)
    assert r.returncode == 2 and "is not a model name" in r.stderr and "planted" not in r.stdout, r.stderr


@pytest.mark.parametrize("name", ["x" * 65, "ok\n"])
def test_import_as_refuses_what_is_not_a_model_name(name, tmp_path, llmctl_home):
    """A name a user picks has at most 64 characters and no trailing newline (``$`` let it pass)."""
    src = tmp_path / "m.gguf"
    src.write_bytes(GGUF)
    r = cli("import", str(src), "--as", name)
    _no_traceback(r)
    assert r.returncode == 2 and "is not a model name" in r.stderr and "at most 64" in r.stderr, r.stderr
    assert _files(llmctl_home / "models") == set()


# -- import --force of a store file onto itself ------------------------------------------------
def test_import_of_a_store_file_as_itself_with_force_keeps_it(store):
    """`import STORE_FILE --as SAME --force` deleted the source before copying it; with --link
    it left a link to itself. The only copy is kept either way."""
    own = store / "keep" / "keep.gguf"
    r = cli("import", str(own), "--as", "keep", "--force")
    _no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert own.read_bytes() == GGUF and not own.is_symlink()
    r = cli("import", str(own), "--as", "keep", "--force", "--link")
    _no_traceback(r)
    assert r.returncode == 2 and "would point at nothing" in r.stderr, r.stderr
    assert own.read_bytes() == GGUF and not own.is_symlink()
    [m] = json.loads(cli("models", "list", "--json").stdout)
    assert m["name"] == "keep" and m["size"] == len(GGUF)
    assert sorted(p.name for p in store.iterdir()) == ["keep"]  # no staging folder left


# -- a full disk, a read-only home -------------------------------------------------------------
@contextlib.contextmanager
def _mounted(target: Path, *steps: list[str]):
    """Run the mount commands ``steps`` on ``target``; skip the test (saying why) if mounting is
    not allowed here; always unmount."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) to make a full or read-only file system")
    done = 0
    try:
        for argv in steps:
            r = subprocess.run([*argv, str(target)], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot mount here ({' '.join(argv)}: {r.stderr.strip()})")
            done += 1
        yield
    finally:
        if done:
            if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_import_onto_a_full_disk_says_so_and_leaves_no_half_file(tmp_path, llmctl_home):
    models = llmctl_home / "models"
    models.mkdir(parents=True)
    small, big = tmp_path / "small.gguf", tmp_path / "big.gguf"
    small.write_bytes(GGUF)
    big.write_bytes(b"GGUF" + bytes(2 << 20))
    with _mounted(models, ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs"]):
        assert cli("import", str(small), "--as", "old").returncode == 0
        for args in (["--as", "big"], ["--as", "old", "--force"]):
            r = cli("import", str(big), *args)
            _no_traceback(r)
            assert r.returncode == 1 and "no space left" in r.stderr and "free some space" in r.stderr, r.stderr
            assert {p.relative_to(models).as_posix() for p in _files(models)} == \
                {"old/small.gguf", "old/manifest.json"}
        assert (models / "old" / "small.gguf").read_bytes() == GGUF
        assert [m["name"] for m in json.loads(cli("models", "list", "--json").stdout)] == ["old"]


def test_a_read_only_home_gives_a_message(tmp_path, store, llmctl_home):
    """import, rm and pull say the home is read-only (no traceback); list still works."""
    src = tmp_path / "new.gguf"
    src.write_bytes(GGUF)
    before = _files(llmctl_home)
    with _mounted(llmctl_home, ["mount", "--bind", str(llmctl_home)], ["mount", "-o", "remount,bind,ro"]):
        with StandInHub({SAFE_REPO: {"model-Q4_0.gguf": GGUF}}) as hub:
            runs = [cli("import", str(src), "--as", "new"), cli("import", str(src), "--as", "keep", "--force"),
                    cli("models", "rm", "keep"), _pull(hub, f"hf:{SAFE_REPO}")]
        for r in runs:
            _no_traceback(r)
            assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
            assert "check the permissions and free space of" in r.stderr
        r = cli("models", "list", "--json")
        assert r.returncode == 0 and [m["name"] for m in json.loads(r.stdout)] == ["keep"]
    assert _files(llmctl_home) == before


# -- links out of the store --------------------------------------------------------------------
def test_links_out_of_the_store_give_messages(tmp_path, store):
    """A store entry linking to a folder outside the store (or to the store itself) is left out
    of `models list` with a warning, `models show` refuses it, and `models rm` removes only the
    link (a looping link too); nothing outside is touched."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps(
        {"name": "away", "path": "w.gguf", "reference": "r", "size": 1, "source": "import"}))
    (outside / "w.gguf").write_bytes(GGUF)
    (store / "away").symlink_to(outside)
    (store / "loop").symlink_to("loop")
    (store / "self").symlink_to(store)
    r = cli("models", "list", "--json")
    _no_traceback(r)
    assert r.returncode == 0 and [m["name"] for m in json.loads(r.stdout)] == ["keep"], r.stdout
    assert f"{store / 'away'} is a link to {outside}" in r.stderr and "models rm away" in r.stderr
    assert "models rm self" in r.stderr and "models rm loop" in r.stderr
    r = cli("models", "show", "away")
    _no_traceback(r)
    assert r.returncode == 1 and "outside the model store" in r.stderr and "w.gguf" not in r.stdout, r.stderr
    r = cli("models", "rm", "away", "loop", "self")
    _no_traceback(r)
    assert r.returncode == 0 and f"removed the link (its target {outside} was kept)" in r.stdout, r.stderr
    assert sorted(p.name for p in store.iterdir()) == ["keep"]
    assert sorted(p.name for p in outside.iterdir()) == ["manifest.json", "w.gguf"]
