"""A model's GGUF header, read from the Hub (or the mirror in HF_ENDPOINT) without pulling it.

:func:`hub_layout` lists the repo as `llmctl pull` does (:func:`llmctl.models.hub.snapshot`,
:func:`llmctl.models.pull.select`), takes the file sizes from that listing (all parts of a split
model) and reads the key/value section of the first part's header through :class:`RangeFile`:
a read-only file object whose reads are served from HTTP Range requests, one block (1 MiB) at a
time, each block fetched once. Only the blocks the header walk touches are asked for (a few MiB
for a large vocabulary). A server that ignores Range and answers 200 with the whole file is read
no further than one block: the file is then given up on (:class:`RangeNotSupported`), never
downloaded whole.

huggingface_hub (and its HTTP client) is imported when called, never at import time.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import HubUnreachable, LlmctlError

if TYPE_CHECKING:
    from ..paths import Paths
    from .gguf import ModelLayout
    from .hub import RemoteFile

BLOCK = 1024 * 1024  #: bytes per Range request
TIMEOUT = 10.0  #: seconds to connect / between bytes
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.I)


class RangeNotSupported(HubUnreachable):
    """The server answered a Range request with something else than the asked bytes."""


class RangeFile(io.RawIOBase):
    """A read-only, seekable binary file over HTTP Range requests (blocks of ``block`` bytes,
    cached). ``headers`` go with every request (the token); redirects are followed.
    ``requests`` and ``received`` count what went over the network."""

    def __init__(self, url: str, size: int, headers: dict[str, str] | None = None, *, block: int = BLOCK,
                 session: Any = None, timeout: float = TIMEOUT, name: str | None = None) -> None:
        super().__init__()
        self.url, self.size, self.block, self.timeout = url, int(size), int(block), timeout
        self.headers = {**(headers or {}), "Accept-Encoding": "identity"}
        self.name = name or url
        self._session = session
        self._blocks: dict[int, bytes] = {}
        self._pos = 0
        self.requests = 0
        self.received = 0

    # -- io.RawIOBase ------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed file")
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        out = bytearray()
        while self._pos < end:
            i = self._pos // self.block
            data = self._block(i)
            start = self._pos - i * self.block
            piece = data[start:start + (end - self._pos)]
            if not piece:  # the server sent less than the listing's size
                break
            out += piece
            self._pos += len(piece)
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    # -- the network -------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._session is None:
            from huggingface_hub.utils import get_session

            self._session = get_session()  # follows redirects
        return self._session

    def _block(self, i: int) -> bytes:
        cached = self._blocks.get(i)
        if cached is not None:
            return cached
        start = i * self.block
        stop = min(self.size, start + self.block) - 1
        self.requests += 1
        with self._client().stream("GET", self.url, headers={**self.headers, "Range": f"bytes={start}-{stop}"},
                                   timeout=self.timeout, follow_redirects=True) as r:
            if r.status_code >= 400:
                r.read()
                from huggingface_hub.utils import hf_raise_for_status

                hf_raise_for_status(r)  # the caller's hub_errors() names it
                raise HubUnreachable(f"{self.url}: HTTP {r.status_code}")
            data = bytearray()
            want = stop - start + 1
            if r.status_code == 206:
                m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
                if m and int(m.group(1)) != start:
                    raise RangeNotSupported(f"{self.url}: asked for bytes from {start}, got {m.group(0)}")
                for chunk in r.iter_raw():
                    data += chunk
                    if len(data) > want:  # more than asked for: stop reading
                        raise RangeNotSupported(f"{self.url}: sent more than the {want} bytes asked for")
            else:
                # 200: the server ignores Range and sends the whole file. Read at most one block
                # of it: enough when the whole file is that small, else give up, never download it
                for chunk in r.iter_raw():
                    data += chunk
                    if len(data) > self.block:
                        break
                self.received += len(data)
                if start != 0 or len(data) != self.size or self.size > self.block:
                    raise RangeNotSupported(
                        f"{self.url} ignores HTTP Range requests (answered {r.status_code} with the whole "
                        f"file), so its header cannot be read without downloading the file")
                self._blocks[0] = bytes(data)
                return self._blocks[0]
        self.received += len(data)
        self._blocks[i] = bytes(data)
        return self._blocks[i]


@dataclass
class RemoteLayout:
    layout: ModelLayout
    repo: str
    revision: str  #: the pinned commit
    path: str  #: the (first) model file in the repo
    parts: list[str]
    requests: int  #: Range requests made for the header
    received: int  #: bytes they brought

    @property
    def note(self) -> str:
        return f"estimated from the Hub ({self.repo}@{self.revision[:12]}, not pulled yet)"


def _parts(files: list[RemoteFile], main: str) -> list[RemoteFile]:
    from .refs import SPLIT_RE, split_base

    if not SPLIT_RE.search(main):
        return [f for f in files if f.path == main]
    base = split_base(main)
    return sorted((f for f in files if SPLIT_RE.search(f.path) and split_base(f.path) == base),
                  key=lambda f: f.path)


def hub_layout(text: str, paths: Paths | None = None, *, revision: str | None = None,
               block: int = BLOCK) -> RemoteLayout:
    """The :class:`ModelLayout` of the GGUF model a pullable reference means, from the Hub:
    sizes from the repo listing, the header's key/value section over Range requests.
    Raises llmctl errors (HubUnreachable, ModelNotFound, ...) or ValueError (not a GGUF file)."""
    from ..paths import Paths
    from .gguf import header_fields, layout_from_fields, layout_keys
    from .hub import hub_errors, locate, snapshot
    from .pull import parse, select

    paths = paths or Paths.from_env()
    ref = parse(text, paths)
    snap = snapshot(str(ref.repo), revision)
    sel = select(ref, snap)
    if sel.main == "." or not sel.main.lower().endswith(".gguf"):
        raise LlmctlError(f"{ref.canonical} is not one GGUF model ({snap.repo} holds "
                          f"{len(snap.files)} files): nothing to estimate from")
    parts = _parts(snap.files, sel.main) or [f for f in snap.files if f.path == sel.main]
    size = sum(f.size for f in parts)
    first = parts[0]
    loc = locate(snap.repo, snap.revision, first.path)
    f = RangeFile(loc.url, first.size, loc.headers, block=block, name=f"{snap.repo}/{first.path}")
    with hub_errors(snap.repo, snap.revision, first.path):
        fields = header_fields(f, layout_keys)
    return RemoteLayout(layout_from_fields(fields, size), snap.repo, snap.revision, first.path,
                        [p.path for p in parts], f.requests, f.received)
