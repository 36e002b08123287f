"""A real Hugging Face Hub mirror on loopback for the pull tests and the benchmark: olah.

Two olah processes, both real and unmodified:

- the *origin* serves local git repositories (``MIRRORS/models/ORG/REPO``, branch ``main``) in
  offline mode. Its file route ignores HTTP Range requests (it always answers 200 with the
  whole blob), so a resumed download could not be shown to transfer only the remainder;
- the *front* is an olah caching proxy whose upstream (``hf-netloc``) is the origin, as a
  company mirror in front of the Hub would be. It answers Range requests with 206 from its
  cache. ``url`` (the front) is what tests put in HF_ENDPOINT. Its cache blocks are as large
  as the largest file (whole MiB): it fetches a block as a range of the origin's file, and the
  origin, ignoring ranges, always sends the whole file, which must then be that one block
  (olah pads every cached file to a whole block, so they are no larger than needed).

Two catches of olah handled here: the origin answers ``/api/models/ORG/REPO`` (no revision)
only if it finds the repo's revision metadata in its ``repos-path``, which the front needs to
check a repo exists, so :meth:`HubMirror.start` stores the origin's own
``/api/models/ORG/REPO/revision/main`` answer there. ``start`` also reads every file of 1 MiB
or more once through the front, so that its cache is filled before the tests time anything.

olah is found at $LLMCTL_TEST_OLAH, else ``.venv-olah/bin/olah-cli`` in the repo, else on PATH.
Files may be plain git blobs (verified by their git blob id) or git-LFS pointers with the object
in ``.git/lfs/objects`` (the listing then carries the sha256, as the real Hub's does).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_olah() -> str | None:
    env = os.environ.get("LLMCTL_TEST_OLAH")
    if env:
        return env
    local = REPO_ROOT / ".venv-olah" / "bin" / "olah-cli"
    if local.exists():
        return str(local)
    return shutil.which("olah-cli")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=test@example.invalid", "-c", "user.name=test",
                           "-c", "core.compression=0", "-c", "core.looseCompression=0", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def lfs_pointer(content: bytes, *, size: int | None = None) -> tuple[bytes, str]:
    """A git-LFS pointer for ``content`` (its sha256 and size, or a claimed ``size``)."""
    sha = hashlib.sha256(content).hexdigest()
    n = len(content) if size is None else size
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {n}\n".encode(), sha


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class LfsFile:
    """A file committed as an LFS pointer. ``served`` is the object olah serves (defaults to
    ``content``; give other bytes of the same length to play a corrupted store); ``claimed_size``
    makes the pointer claim another size (no object is stored then)."""

    content: bytes
    served: bytes | None = None
    claimed_size: int | None = None


@dataclass
class HubMirror:
    root: Path
    olah: str
    repos: dict[str, str] = field(default_factory=dict)  #: ORG/REPO -> commit
    files: dict[str, list[str]] = field(default_factory=dict)  #: ORG/REPO -> servable paths
    procs: list[subprocess.Popen] = field(default_factory=list)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    warm_min: int = 1 << 20  #: files from this size on are read through the front by start()
    url: str = ""  #: the front (HF_ENDPOINT)
    origin_url: str = ""

    # -- repos ------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes | Path | LfsFile]) -> str:
        """Create a git repo on branch main holding ``files``; return its commit. Call before start()."""
        d = self.root / "mirrors" / "models" / repo_id
        d.mkdir(parents=True)
        _git(d, "init", "-q", "-b", "main")
        servable = []
        for rel, data in files.items():
            target = d / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, LfsFile):
                pointer, sha = lfs_pointer(data.content, size=data.claimed_size)
                target.write_bytes(pointer)
                if data.claimed_size is None:
                    obj = d / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
                    obj.parent.mkdir(parents=True, exist_ok=True)
                    obj.write_bytes(data.served if data.served is not None else data.content)
                    servable.append(rel)
                    self.sizes[(repo_id, rel)] = len(data.content)
            else:
                if isinstance(data, Path):
                    shutil.copyfile(data, target)
                else:
                    target.write_bytes(data)
                servable.append(rel)
                self.sizes[(repo_id, rel)] = target.stat().st_size
        _git(d, "add", "-A")
        _git(d, "commit", "-q", "-m", "add files")
        sha = _git(d, "rev-parse", "HEAD")
        self.repos[repo_id] = sha
        self.files[repo_id] = servable
        return sha

    # -- processes --------------------------------------------------------------------------
    def _config(self, name: str, port: int, extra: str) -> Path:
        cfg = self.root / f"{name}.toml"
        cfg.write_text(f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "./{name}-repos"\n'
                       f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{port}"\n'
                       f'mirror-lfs-netloc = "127.0.0.1:{port}"\n{extra}')
        return cfg

    def _spawn(self, name: str, cfg: Path) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        p = subprocess.Popen([self.olah, "-c", str(cfg)], cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def _wait(self, p: subprocess.Popen, url: str, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"olah ({name}) exited with {p.returncode}:\n{self.log(name)[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"olah ({name}) did not answer {url} within {timeout}s:\n{self.log(name)[-3000:]}")

    def start(self) -> HubMirror:
        assert self.repos, "add repos before starting the mirror"
        origin_port, front_port = free_port(), free_port()
        mib = 1 << 20  # olah's cache chunk size; blocks are whole chunks
        block = max(1, -(-max(self.sizes.values(), default=1) // mib)) * mib
        self.origin_url = f"http://127.0.0.1:{origin_port}"
        self.url = f"http://127.0.0.1:{front_port}"
        origin = self._spawn("origin", self._config(
            "origin", origin_port, f'mirrors-path = ["{self.root / "mirrors"}"]\n[accessibility]\noffline = true\n'))
        front = self._spawn("front", self._config(
            "front", front_port, f'cache-block-size = {block}\nhf-scheme = "http"\n'
                                 f'hf-netloc = "127.0.0.1:{origin_port}"\n'
                                 f'hf-lfs-netloc = "127.0.0.1:{origin_port}"\n[accessibility]\noffline = false\n'))
        first = next(iter(self.repos))
        self._wait(origin, f"{self.origin_url}/api/models/{first}/revision/main", "origin")
        for repo_id, sha in self.repos.items():
            with urllib.request.urlopen(f"{self.origin_url}/api/models/{repo_id}/revision/main", timeout=10) as r:
                meta = r.read()
            d = self.root / "origin-repos" / "api" / "models" / repo_id / "revision" / sha
            d.mkdir(parents=True, exist_ok=True)
            (d / "meta_head.json").write_bytes(meta)
        self._wait(front, f"{self.url}/api/models/{first}/revision/main", "front")
        for repo_id, paths in self.files.items():
            for rel in paths:
                if self.sizes.get((repo_id, rel), 0) < self.warm_min:
                    continue  # small files: the front fetches them whole on demand anyway
                with urllib.request.urlopen(f"{self.url}/{repo_id}/resolve/main/{rel}", timeout=60) as r:
                    while r.read(1 << 20):
                        pass
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
            try:  # anything the group left behind
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def log(self, name: str = "front") -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def requests(self, repo_id: str, path: str, name: str = "front") -> list[str]:
        """The front's access-log lines for GETs of one file (each ends with its status)."""
        needle = f'"GET /{repo_id}/resolve/'
        return [ln for ln in self.log(name).splitlines() if needle in ln and f"/{path} HTTP" in ln]

    def meta(self) -> dict:
        return {"url": self.url, "origin": self.origin_url, "repos": self.repos}


def write_gguf(path: Path, *, arch: str = "llama", context_length: int = 2048, file_type: int = 7,
               n: int = 4096, split: tuple[int, int] | None = None, name: str = "test model") -> Path:
    """A small real GGUF file (the ``gguf`` package's writer): one F32 tensor of ``n`` values."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_context_length(context_length)
    w.add_block_count(1)
    w.add_embedding_length(64)
    w.add_file_type(file_type)
    if split is not None:
        w.add_uint16("split.no", split[0])
        w.add_uint16("split.count", split[1])
    w.add_tensor(f"blk.{split[0] if split else 0}.weight", np.arange(n, dtype=np.float32).reshape(64, n // 64))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
