"""Talking to the Hugging Face Hub (or a mirror in HF_ENDPOINT) through ``huggingface_hub``.

Everything here imports huggingface_hub lazily. Its exceptions become llmctl's own errors in
one place (:func:`hub_errors`), each naming the next step.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from ..errors import HubAuthRequired, HubUnreachable, LlmctlError, ModelNotFound, UnsafeHubListing

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    """The Hub's address: HF_ENDPOINT (a mirror) or huggingface.co, read at call time."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    """HF_TOKEN from the environment (None lets huggingface_hub use its own login, if any)."""
    return os.environ.get("HF_TOKEN") or None


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a pinned commit, with the checksums the Hub publishes for it."""

    path: str
    size: int
    blob_id: str | None  #: git blob id: SHA-1 of b"blob <size>\0" + content (of the LFS pointer for LFS files)
    sha256: str | None  #: the LFS object's SHA-256 (LFS files only)

    @property
    def checksum(self) -> tuple[str, str] | None:
        """(how, expected hex digest) to verify the downloaded content with."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.blob_id:
            return "git-blob-sha1", self.blob_id.lower()
        return None


@dataclass(frozen=True)
class Snapshot:
    repo: str
    revision: str  #: full commit id
    files: list[RemoteFile]
    endpoint: str


def unsafe_reason(path: object) -> str | None:
    """Why a file path from a repo listing must not be written under the model's folder, or
    None when it is a plain relative path (``DIR/NAME``: no ``..``, no absolute path...)."""
    if not isinstance(path, str) or not path:
        return "it is empty"
    if path.startswith("/"):
        return "it is an absolute path"
    if "\\" in path:
        return "it has a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "it has a control character (a NUL, a newline...)"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "it has an empty, `.` or `..` part"
    if max(len(p.encode("utf-8", "surrogatepass")) for p in parts) > 255:
        return "a part of it is too long for a file name"
    return None


def check_listing(repo: str, revision: str, files: list[RemoteFile]) -> None:
    """Refuse a listing with a path that is unsafe (see :func:`unsafe_reason`), listed twice, or
    both a file and a folder: before any byte of it is written."""
    from collections import Counter

    count = Counter(f.path for f in files)
    for f in files:
        why = unsafe_reason(f.path)
        if why is None and count[f.path] > 1:
            why = "it is listed twice"
        if why is None and any(count["/".join(f.path.split("/")[:i])] for i in range(1, f.path.count("/") + 1)):
            why = "a folder on its way is also listed as a file"
        if why is not None:
            raise UnsafeHubListing(f"{endpoint()} lists the file {f.path!r} in {repo}@{revision[:12]}, which llmctl "
                                   f"will not write: {why}; nothing was written", repo=repo, path=f.path)


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure of whichever HTTP library huggingface_hub uses (httpx2, httpx...)."""
    names = {c.__name__ for c in type(exc).__mro__}
    roots = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "TimeoutException", "NetworkError"}) \
        and bool(roots & {"httpx2", "httpx", "requests", "urllib3", "builtins"})


@contextlib.contextmanager
def hub_errors(repo: str, revision: str | None = None, path: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's (and the network's) exceptions into llmctl errors."""
    from huggingface_hub import errors as hf

    where = endpoint()
    try:
        yield
    except LlmctlError:
        raise
    except hf.GatedRepoError:
        raise HubAuthRequired(f"{repo} is a gated repo: accept its terms on {where}/{repo} "
                              f"and set HF_TOKEN to a token of that account") from None
    except hf.RepositoryNotFoundError:
        extra = "" if token() else " (a private repo needs HF_TOKEN)"
        raise ModelNotFound(f"repo {repo} not found on {where}{extra}", repo=repo) from None
    except hf.RevisionNotFoundError:
        raise ModelNotFound(f"repo {repo} has no revision {revision!r} on {where}", repo=repo) from None
    except (hf.EntryNotFoundError, getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)):
        raise ModelNotFound(f"repo {repo} has no file {path!r} at {revision or 'main'}", repo=repo) from None
    except hf.OfflineModeIsEnabled:
        raise HubUnreachable("HF_HUB_OFFLINE is set, so the Hub is not contacted") from None
    except hf.HfHubHTTPError as exc:
        code = exc.response.status_code if getattr(exc, "response", None) is not None else 0
        if code in (401, 403):
            raise HubAuthRequired(f"{where} refused access to {repo} (HTTP {code}): "
                                  f"{'the token in HF_TOKEN lacks access' if token() else 'set HF_TOKEN'}") from None
        if code == 404:
            raise ModelNotFound(f"{where}: {repo} {path or ''} not found (HTTP 404)".replace("  ", " "),
                                repo=repo) from None
        raise HubUnreachable(f"{where} answered HTTP {code} for {repo}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - the transports' errors have no common base
        if _is_network_error(exc):
            raise HubUnreachable(f"cannot reach {where}: {exc}") from None
        raise


def snapshot(repo: str, revision: str | None = None) -> Snapshot:
    """Pin ``revision`` (default: main) to its commit and list every file there."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint(), token=token())
    rev = revision or "main"
    with hub_errors(repo, rev):
        # the revision is always passed: mirrors such as olah answer /api/models/ORG/REPO
        # only with it (/api/models/ORG/REPO/revision/main)
        info = api.model_info(repo, revision=rev)
        sha = info.sha or rev
        files = []
        for entry in api.list_repo_tree(repo, revision=sha, recursive=True):
            size = getattr(entry, "size", None)
            if size is None:  # a folder
                continue
            lfs = getattr(entry, "lfs", None)
            sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            files.append(RemoteFile(entry.path, int(size), getattr(entry, "blob_id", None), sha256))
    files.sort(key=lambda f: str(f.path))
    check_listing(repo, sha, files)
    return Snapshot(repo, sha, files, endpoint())


@dataclass(frozen=True)
class Location:
    url: str  #: where the bytes are (after the Hub's redirect to its CDN, if any)
    size: int | None
    headers: dict[str, str]


def locate(repo: str, revision: str, path: str) -> Location:
    """HEAD the file's resolve URL at the pinned commit: its real location and size."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, path, revision=revision, endpoint=endpoint())
    with hub_errors(repo, revision, path):
        meta = get_hf_file_metadata(url, token=token(), endpoint=endpoint())
    return Location(meta.location or url, meta.size, build_hf_headers(token=token()))
