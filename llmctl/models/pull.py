"""`llmctl pull`: from a reference to verified files in the model store.

1. parse the reference (alias via the catalog, ``hf:`` forms) and name the store directory;
2. pin the revision to a commit and list the repo there (one API call each);
3. pick the files: one quant's GGUF file(s) (all parts of a split file), one named file, or
   the whole repo; nothing to do if the store already holds that commit's files;
4. check the free space against what is still missing;
5. fetch each file, resuming its partial, verifying sha256 or the git blob id (transfer.py);
6. move the files in place and write the manifest last.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    HubUnreachable,
    ModelMissing,
    ModelNotFound,
    NotEnoughSpace,
    StoreLinkOutside,
    UnsafeHubListing,
    UsageError,
)
from ..paths import Paths
from .hub import RemoteFile, Snapshot, endpoint, snapshot, unsafe_reason
from .progress import PullProgress, human
from .refs import ModelRef, parse_ref
from .selection import Selection, quant_sets, select
from .store import Manifest, first_link, inside, is_store_name, model_dir, store_error

if TYPE_CHECKING:
    from ..profiles.schema import Profile
    from .transfer import Fetched

WORK_DIR = ".pull"  #: partial files and their notes, inside the model's directory
#: llmctl's own names in a model's directory: a Hub file of that name would replace them
RESERVED = frozenset({"manifest.json", ".manifest.json.tmp", WORK_DIR})
PARALLEL_FILES = 4  #: files fetched at once for multi-file pulls


@dataclass
class PullResult:
    manifest: Manifest
    directory: Path
    noop: bool  #: the store already had it: nothing was downloaded
    transferred: int = 0  #: bytes received by this pull
    resumed: int = 0  #: bytes that partial files from earlier pulls already had
    seconds: float = 0.0
    note: str = ""  #: why nothing was done, or what was kept

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self.manifest)
        d.update(directory=str(self.directory), noop=self.noop, transferred_bytes=self.transferred,
                 resumed_bytes=self.resumed, seconds=round(self.seconds, 3), note=self.note)
        return d


# -- the store side ---------------------------------------------------------------------------
def _complete(directory: Path, m: Manifest | None) -> bool:
    """The manifest's files are all there with their recorded sizes."""
    if m is None or not m.files:
        return False
    for f in m.files:
        p = directory / f["path"]
        try:
            if p.stat().st_size != f["size"]:
                return False
        except OSError:
            return False
    return True


def _kept(directory: Path, m: Manifest | None, f: RemoteFile) -> bool:
    """``f`` is already in place from an earlier pull (same size and same checksum)."""
    if m is None:
        return False
    for old in m.files:
        if old["path"] == f.path and old["size"] == f.size and (old.get("sha256"), old.get("blob_id")) == \
                (f.sha256, f.blob_id) and old.get("verified"):
            try:
                return (directory / f.path).stat().st_size == f.size
            except OSError:
                return False
    return False


def check_targets(directory: Path, files: list[RemoteFile], repo: str) -> None:
    """Every file, and its partial file and note, lands inside the model's folder (no link on
    the way leads out of it) and replaces none of llmctl's own files. Checked before any byte
    is written."""
    from .transfer import partial_paths

    work = directory / WORK_DIR
    if not inside(work, directory):
        raise StoreLinkOutside(f"{work} is a link to {os.readlink(work)}, outside the model's folder: llmctl "
                               f"will not pull into it; nothing was written", path=str(work))
    for f in files:
        why = unsafe_reason(f.path) or (f"it would replace llmctl's own {f.path.split('/')[0]}"
                                        if f.path.split("/")[0] in RESERVED else None)
        if why is not None:
            raise UnsafeHubListing(f"{endpoint()} lists the file {f.path!r} in {repo}, which llmctl will not "
                                   f"write: {why}; nothing was written", repo=repo, path=f.path)
        for target, base in ((directory / f.path, directory), *((p, work) for p in partial_paths(work, f.path))):
            if not inside(target, base):
                link = first_link(target, base)
                raise StoreLinkOutside(f"{link} is a link to {os.readlink(link) if link else '?'}: {f.path} "
                                       f"would be written outside the model's folder {directory}; nothing was "
                                       f"written", path=str(link or target))


def _free_bytes(path: Path) -> tuple[int, Path]:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free, p


class _Lock:
    """One pull per store name at a time (a kernel lock: dies with its process)."""

    def __init__(self, paths: Paths, name: str, progress: PullProgress) -> None:
        paths.ensure()
        self.fd = os.open(paths.run / f"pull-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.message(f"waiting for another pull of {name} to finish...")
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        os.close(self.fd)


def _summary(how: list[str]) -> str:
    kinds = sorted(set(how))
    return "+".join(kinds) if kinds else "size"


def parse(text: str, paths: Paths) -> ModelRef:
    """A reference that can be pulled, or an error saying why not."""
    from .catalog import load_catalog

    ref = parse_ref(text, load_catalog(paths))
    if ref.kind == "path":
        raise UsageError(f"{text!r} is a local path: bring it into the store with "
                         f"`llmctl import {text} --as NAME`")
    if ref.kind == "name":
        m = Manifest.read(paths.models / text) if is_store_name(text) else None
        if m is not None and m.source == "pull":
            return parse_ref(m.reference, load_catalog(paths))
        raise ModelNotFound(f"{text!r} is not a catalog alias (see `llmctl models catalog`) nor a Hub "
                            f"reference (hf:ORG/REPO, hf:ORG/REPO:QUANT, hf:ORG/REPO/FILE.gguf)")
    return ref


def pull(text: str, *, paths: Paths | None = None, revision: str | None = None, force: bool = False,
         progress: PullProgress | None = None) -> PullResult:
    """Pull a reference into the store; see the module docstring. ``progress`` is closed."""
    paths = paths or Paths.from_env()
    progress = progress or PullProgress()
    try:
        ref = parse(text, paths)
        try:
            lock = _Lock(paths, ref.store_name, progress)
            try:
                return _pull_locked(ref, paths, revision, force, progress)
            finally:
                lock.release()
        except OSError as exc:  # the Hub's and the network's errors are llmctl errors by now
            if exc.filename is None and exc.errno not in _FS_ERRNOS:
                raise
            raise store_error(exc, paths.models) from None
    finally:
        progress.close()


#: errors of the file system (a read-only or full disk...), whatever call met them
_FS_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                        errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP, errno.EIO})


def _pull_locked(ref: ModelRef, paths: Paths, revision: str | None, force: bool,
                 progress: PullProgress) -> PullResult:
    t0 = time.monotonic()
    directory = model_dir(ref.store_name, paths)
    old = Manifest.read(directory)
    snap = _snapshot_unless_current(ref, directory, old, revision, force, t0)
    if isinstance(snap, PullResult):
        return snap
    sel = select(ref, snap)
    check_targets(directory, sel.files, snap.repo)
    todo = [f for f in sel.files if force or not _kept(directory, old, f)]
    kept = [f for f in sel.files if f not in todo]
    _check_space_and_begin(ref, snap, sel, todo, directory, progress)
    for f in kept:
        progress.message(f"  {f.path}: kept from the earlier pull (same checksum)")
    results = _fetch_all(snap, todo, directory / WORK_DIR, progress)
    _install(directory, todo, results, sel, old)
    m = _write_manifest(ref, snap, sel, old, results, directory)
    transferred = sum(r.transferred for _, r in results.values())
    resumed = sum(r.resumed_from for _, r in results.values())
    return PullResult(m, directory, False, transferred, resumed, time.monotonic() - t0,
                      note=f"{len(kept)} file(s) kept from the earlier pull" if kept else "")


def _snapshot_unless_current(ref: ModelRef, directory: Path, old: Manifest | None, revision: str | None,
                             force: bool, t0: float) -> Snapshot | PullResult:
    """The repo's snapshot to pull, or the no-op result when the store already has it."""
    name = ref.store_name
    if old is not None and old.source != "pull":
        raise UsageError(f"the store already has a model named {name!r} ({old.source}ed from {old.reference}); "
                         f"remove it first with `llmctl models rm {name}`")
    have_it = _complete(directory, old) and old is not None and old.reference == ref.canonical
    current = old if have_it and not force else None
    if current is not None and revision and current.revision == revision:
        return PullResult(current, directory, True, note="already pulled at that commit")
    try:
        snap = snapshot(str(ref.repo), revision)
    except HubUnreachable as exc:
        if current is not None:
            return PullResult(current, directory, True, seconds=time.monotonic() - t0,
                              note=f"already pulled (could not check for a newer revision: {exc.message})")
        raise
    if current is not None and current.revision == snap.revision:
        return PullResult(current, directory, True, seconds=time.monotonic() - t0,
                          note="already pulled, up to date")
    return snap


def _check_space_and_begin(ref: ModelRef, snap: Snapshot, sel: Selection, todo: list[RemoteFile],
                           directory: Path, progress: PullProgress) -> None:
    """Refuse before any byte when what is still missing does not fit; else announce the pull."""
    from .transfer import partial_size

    total = sum(f.size for f in sel.files)
    missing = sum(f.size - partial_size(directory / WORK_DIR, f) for f in todo)
    free, where = _free_bytes(directory)
    if missing > free:
        raise NotEnoughSpace(f"{ref.canonical} needs {human(missing)} more on {where}, which has {human(free)} "
                             f"free ({len(todo)} file{'s' * (len(todo) != 1)}, {human(total)} in all)",
                             path=str(where))
    progress.begin(f"{ref.canonical} ({snap.repo}@{snap.revision[:12]})", len(sel.files), total, missing)


def _fetch_all(snap: Snapshot, todo: list[RemoteFile], work: Path,
               progress: PullProgress) -> dict[str, tuple[Path, Fetched]]:
    """Fetch and verify ``todo`` into the work area, a few files at once; path -> (partial, result)."""
    from .transfer import fetch, partial_paths
    from .workers import run_all

    results: dict[str, tuple[Path, Fetched]] = {}
    cancel = threading.Event()

    def one(f: RemoteFile) -> Fetched:
        # finished files stay in the work area until all are: an interrupted pull of several
        # files then resumes without fetching the finished ones again (they are re-verified)
        part, res = fetch(snap.repo, snap.revision, f, work,
                          on_start=lambda have: progress.file_start(f.path, f.size, have),
                          on_bytes=lambda n: progress.advance(f.path, n),
                          on_reset=lambda: progress.file_reset(f.path), cancel=cancel)
        progress.file_end(f.path, f"verified by {res.verified}" if res.verified != "size" else "size checked")
        results[f.path] = (part, res)
        return res

    def interrupted() -> str:
        kept_now = sum(p.stat().st_size for p in (partial_paths(work, f.path)[0] for f in todo) if p.exists())
        return (f"interrupted: {human(kept_now)} of {human(sum(f.size for f in todo))} kept in {work}; "
                f"the same `llmctl pull` resumes it")

    run_all([functools.partial(one, f) for f in todo], PARALLEL_FILES, cancel,
            on_slow_stop=progress.message, interrupted_message=interrupted)
    return results


def _install(directory: Path, todo: list[RemoteFile], results: dict[str, tuple[Path, Fetched]],
             sel: Selection, old: Manifest | None) -> None:
    """Every file is verified: move them in place, drop files of an earlier revision that this
    one does not have, and the work area (the manifest comes last, after this)."""
    for f in todo:
        part, _ = results[f.path]
        dest = directory / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
    wanted = {f.path for f in sel.files}
    if old is not None:
        for rec in old.files:
            old_file = directory / str(rec["path"])
            if rec["path"] not in wanted and unsafe_reason(rec["path"]) is None and inside(old_file, directory):
                old_file.unlink(missing_ok=True)
    shutil.rmtree(directory / WORK_DIR, ignore_errors=True)


def _write_manifest(ref: ModelRef, snap: Snapshot, sel: Selection, old: Manifest | None,
                    results: dict[str, tuple[Path, Fetched]], directory: Path) -> Manifest:
    records, hows = [], []
    for f in sel.files:
        res = results[f.path][1] if f.path in results else None
        how = res.verified if res is not None else str(next(
            (o.get("verified") for o in (old.files if old else []) if o["path"] == f.path), "size"))
        hows.append(how)
        records.append({"path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id, "verified": how})
    m = Manifest(name=ref.store_name, path=sel.main, reference=ref.canonical, size=sum(f.size for f in sel.files),
                 source="pull", created=time.time(), repo=snap.repo, quant=sel.quant, revision=snap.revision,
                 endpoint=snap.endpoint, files=records, verified=_summary(hows))
    directory.mkdir(parents=True, exist_ok=True)
    m.write(directory)
    return m


def ensure_model(profile: Profile, paths: Paths | None = None, progress: PullProgress | None = None) -> Path:
    """The profile's model file (or directory), pulled first if it is a catalog alias or an
    ``hf:`` reference that is not in the store yet. Other missing models raise ModelMissing."""
    from .resolve import pullable, resolve_model

    paths = paths or Paths.from_env()
    try:
        path = resolve_model(profile, paths)
    except ModelMissing:
        if not pullable(profile.model, paths):
            raise
        pull(profile.model, paths=paths, progress=progress)
        return resolve_model(profile, paths)
    if progress is not None:
        progress.close()
    return path


__all__ = ["pull", "ensure_model", "select", "quant_sets", "PullResult", "Selection", "endpoint"]
