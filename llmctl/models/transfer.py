"""Fetching one file: resumable, checksummed while it streams.

The bytes move through ``huggingface_hub.file_download.http_get``, which asks for the
remainder with a Range header when given ``resume_size`` (and starts over by itself if the
server ignores it). ``hf_hub_download`` itself no longer resumes across processes: it downloads
to a process-unique temporary file that a killed process leaves orphaned. So llmctl keeps its own
partial file, ``PARTIAL = <model dir>/.pull/<path>.incomplete``, next to a small JSON note of
which blob it belongs to; a later pull of the same blob continues from its size.

The checksum (SHA-256 for LFS files, else the git blob SHA-1) is computed in a background thread
fed by the writes, so verifying costs no extra pass over the file in the common case.
"""

from __future__ import annotations

import errno
import hashlib
import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Protocol, cast

from ..errors import ChecksumMismatch, HubUnreachable, NotEnoughSpace, UnsafeHubListing
from .hub import RemoteFile, hub_errors, locate, unsafe_reason

_READ = 8 * 1024 * 1024


class Cancelled(Exception):
    """Another file of the same pull failed or the user pressed Ctrl-C: stop this one."""


class _Digest(Protocol):
    """What hashlib's sha256 and sha1 objects have (and all the transfer uses)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def _new_hasher(how: str, size: int) -> _Digest:
    if how == "sha256":
        return hashlib.sha256()
    h = hashlib.sha1()
    h.update(b"blob %d\0" % size)  # git's object header: the blob id covers it
    return h


class _Hasher:
    """Hashes the partial file's existing prefix, then every written chunk, in a thread."""

    def __init__(self, how: str | None, size: int, partial: Path, prefix: int) -> None:
        self.how, self.size, self.partial = how, size, partial
        self.dirty = False  # the writer seeked/truncated: hash the finished file from disk instead
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._h = _new_hasher(how, size) if how else None
        self._thread = None
        if self._h is not None:
            self._thread = threading.Thread(target=self._run, args=(self._h, prefix), daemon=True)
            self._thread.start()

    def _run(self, h: _Digest, prefix: int) -> None:
        with open(self.partial, "rb") as f:
            left = prefix
            while left > 0:
                block = f.read(min(_READ, left))
                if not block:
                    break
                h.update(block)
                left -= len(block)
        while True:
            chunk = self._q.get()
            if chunk is None:
                return
            h.update(chunk)

    def feed(self, chunk: bytes) -> None:
        if self._thread is not None and not self.dirty:
            self._q.put(chunk)

    def invalidate(self) -> None:
        self.dirty = True

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()

    def hexdigest(self) -> str | None:
        """The digest of the whole file (after :meth:`stop`)."""
        if self.how is None:
            return None
        if not self.dirty and self._h is not None:
            return self._h.hexdigest()
        h = _new_hasher(self.how, self.size)
        with open(self.partial, "rb") as f:
            for block in iter(lambda: f.read(_READ), b""):
                h.update(block)
        return h.hexdigest()


class _Sink:
    """The file object handed to http_get: writes go to disk, the hasher and the progress."""

    def __init__(self, f: BinaryIO, hasher: _Hasher, on_bytes: Callable[[int], None], on_reset: Callable[[], None],
                 cancel: threading.Event | None) -> None:
        self.f, self.hasher, self.on_bytes, self.on_reset, self.cancel = f, hasher, on_bytes, on_reset, cancel
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        n = self.f.write(data)
        self.hasher.feed(data)
        self.written += len(data)
        self.on_bytes(len(data))
        return n

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        self.hasher.invalidate()
        return self.f.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        # http_get truncates when the server ignored the Range header and sends it all again
        self.hasher.invalidate()
        self.on_reset()
        return self.f.truncate(size)

    def flush(self) -> None:
        self.f.flush()


@dataclass
class Fetched:
    path: str
    size: int
    transferred: int  #: bytes received by this call
    resumed_from: int  #: bytes the partial file already had
    verified: str  #: sha256 | git-blob-sha1 | size
    digest: str | None


def partial_paths(work: Path, rel: str) -> tuple[Path, Path]:
    return work / (rel + ".incomplete"), work / (rel + ".json")


def partial_size(work: Path, f: RemoteFile) -> int:
    """Bytes of ``f`` already in its partial file (0 if none, or if it belongs to another blob)."""
    part, note = partial_paths(work, f.path)
    try:
        meta = json.loads(note.read_text())
        size = part.stat().st_size
    except (OSError, ValueError):
        return 0
    if meta.get("id") != _blob_key(f) or size > f.size:
        return 0
    return size


def _blob_key(f: RemoteFile) -> str:
    return f"{f.size}:{f.sha256 or f.blob_id or ''}"


def fetch(repo: str, revision: str, f: RemoteFile, work: Path, *, on_start: Callable[[int], None],
          on_bytes: Callable[[int], None], on_reset: Callable[[], None],
          cancel: threading.Event | None = None) -> tuple[Path, Fetched]:
    """Download ``f`` into its partial file under ``work`` (resuming it), verify it, and return
    the finished partial's path. A checksum mismatch removes the file and raises."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import silent_tqdm

    why = unsafe_reason(f.path)
    if why is not None:  # pull checks the whole listing first; this guards other callers
        raise UnsafeHubListing(f"{repo} lists the file {f.path!r}, which llmctl will not write: {why}",
                               repo=repo, path=f.path)
    part, note = partial_paths(work, f.path)
    part.parent.mkdir(parents=True, exist_ok=True)
    have = partial_size(work, f)
    if have == 0 and part.exists():
        part.unlink()
    note.write_text(json.dumps({"id": _blob_key(f), "repo": repo, "path": f.path}))
    check = f.checksum
    on_start(have)
    try:
        with open(part, "r+b" if part.exists() else "wb") as fh:
            fh.seek(have)
            hasher = _Hasher(check[0] if check else None, f.size, part, have)
            sink = _Sink(fh, hasher, on_bytes, on_reset, cancel)
            try:
                if have < f.size:
                    loc = locate(repo, revision, f.path)
                    with hub_errors(repo, revision, f.path):
                        # http_get writes, seeks, tells and truncates: all _Sink does, and all it needs
                        http_get(loc.url, cast(BinaryIO, sink), resume_size=have, headers=loc.headers,
                                 expected_size=f.size, displayed_filename=f.path, tqdm_class=silent_tqdm)
            finally:
                hasher.stop()
    except OSError as exc:  # from the transfer, or from flushing the file
        if exc.errno == errno.ENOSPC:
            raise NotEnoughSpace(f"the disk filled up while writing {f.path} ({part.parent}); the partial "
                                 f"file is kept, so the same `llmctl pull` resumes it once there is room",
                                 path=str(part.parent)) from None
        if "Consistency check failed" in str(exc):
            raise HubUnreachable(f"the transfer of {f.path} ended early ({exc}); the partial file "
                                 f"is kept, so the same `llmctl pull` resumes it") from None
        raise
    actual = part.stat().st_size
    if actual != f.size:
        raise HubUnreachable(f"{f.path}: got {actual} bytes, expected {f.size}; the partial file is kept, "
                             f"run the same `llmctl pull` to resume it")
    digest = hasher.hexdigest()
    if check is not None:
        how, expected = check
        if digest != expected:
            part.unlink(missing_ok=True)
            note.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{f.path} from {repo}@{revision[:12]} does not match the Hub's {how} "
                f"(expected {expected}, got {digest}); the file was removed")
    return part, Fetched(f.path, f.size, sink.written, have if not hasher.dirty else 0,
                         check[0] if check else "size", digest)
