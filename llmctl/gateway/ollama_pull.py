"""Ollama's ``/api/pull`` as llmctl's pull (:func:`llmctl.models.pull.pull`, in a worker thread),
its progress as Ollama's NDJSON lines::

    {"status": "pulling manifest"}                       the repo is listed, the files chosen
    {"status": "pulling FILE", "digest": "sha256:...", "total": BYTES, "completed": BYTES}   per file, a few a second
    {"status": "writing manifest"}, {"status": "success"}

What may be pulled: a catalog alias or ``hf:`` reference (as `llmctl pull` takes), Ollama's
``hf.co/ORG/REPO[:QUANT]`` spelling of a Hub repo, or the name of a profile or task (its profile's
model; nothing to do when that is a local file). A pull that fails before its first line answers
with an HTTP error; later, with an ``{"error": ...}`` line. A client that goes away does not stop
the pull (it finishes, and the next pull of it is a no-op). ``digest`` identifies the file within
the pull (the hash of its name at that revision); the content is verified against the Hub's
checksum by the pull itself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Callable

from ..errors import HubUnreachable, LlmctlError, ModelNotFound, UsageError
from ..models.progress import PullProgress
from .errors import BadRequest, GatewayHTTPError, UnknownModel, UpstreamFailed
from .ollama import JSON

END = object()  #: the worker's last item


class Failed:
    """The pull raised ``error``."""

    def __init__(self, error: GatewayHTTPError) -> None:
        self.error = error


def reference(name: str, models: dict[str, str], pullable: Callable[[str], bool]) -> str | None:
    """What to pull for the name a client gave; ``models``: profile and task names -> the
    model reference of their profile. None: nothing to pull (that profile's model is a file)."""
    base = name[: -len(":latest")] if name.endswith(":latest") else name
    if name in models or base in models:
        ref = models.get(name) or models[base]
        return ref if pullable(ref) else None
    for prefix in ("https://hf.co/", "https://huggingface.co/", "hf.co/", "huggingface.co/"):
        if base.startswith(prefix):
            return "hf:" + base[len(prefix):]
    return name


def as_http(exc: BaseException) -> GatewayHTTPError:
    """A failed pull as the gateway's HTTP error."""
    message = exc.message if isinstance(exc, LlmctlError) else f"the pull failed: {exc!r}"
    if isinstance(exc, ModelNotFound):
        return UnknownModel(message)
    if isinstance(exc, UsageError):
        return BadRequest(message)
    if isinstance(exc, HubUnreachable):
        return UpstreamFailed(message)
    return GatewayHTTPError(message)


class NdjsonProgress(PullProgress):
    """The pull's progress calls (from its worker threads) as Ollama's status objects, given to
    ``emit``; a file's progress at most every ``every`` seconds, and always at its start and end."""

    def __init__(self, emit: Callable[[JSON], None], every: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit, self.every, self.clock = emit, every, clock
        self.label = ""
        self.lock = threading.Lock()
        self.files: dict[str, list[float]] = {}  #: path -> [total, completed, last emitted]

    def begin(self, label: str, files: int, total: int, to_fetch: int) -> None:
        self.label = label
        self.emit({"status": "pulling manifest"})

    def _line(self, path: str) -> JSON:
        total, done, _ = self.files[path]
        digest = hashlib.sha256(f"{self.label}/{path}".encode()).hexdigest()
        return {"status": f"pulling {path}", "digest": f"sha256:{digest}", "total": int(total), "completed": int(done)}

    def file_start(self, path: str, size: int, have: int) -> None:
        with self.lock:
            self.files[path] = [size, have, self.clock()]
            line = self._line(path)
        self.emit(line)

    def advance(self, path: str, n: int) -> None:
        with self.lock:
            st = self.files.get(path)
            if st is None:
                return
            st[1] += n
            if self.clock() - st[2] < self.every:
                return
            st[2] = self.clock()
            line = self._line(path)
        self.emit(line)

    def file_reset(self, path: str) -> None:
        with self.lock:
            if path not in self.files:
                return
            self.files[path][1] = 0
            line = self._line(path)
        self.emit(line)

    def file_end(self, path: str, note: str) -> None:
        with self.lock:
            if path not in self.files:
                return
            self.files[path][1] = self.files[path][0]
            line = self._line(path)
        self.emit(line)


def run_pull(resolve: Callable[[], str | None], pull: Callable[[str, PullProgress], Any],
             emit: Callable[[Any], None]) -> None:
    """The worker: pull what ``resolve`` names (None: nothing to pull), then emit the last lines
    and END; or a :class:`Failed`, then END."""
    try:
        ref = resolve()
        if ref is not None:
            result = pull(ref, NdjsonProgress(emit))
            emit({"status": result.note or "already pulled"} if result.noop else {"status": "writing manifest"})
        emit({"status": "success"})
    except BaseException as exc:  # noqa: BLE001 - every failure reaches the client
        emit(Failed(as_http(exc)))
    emit(END)
