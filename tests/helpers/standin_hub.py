"""A stand-in Hugging Face Hub on loopback that lists whatever file paths a test gives it.

Why a stand-in and not the olah mirror (tests/hub_mirror.py): olah serves real git
repositories, and git cannot hold a file named ``/abs/x.gguf``, ``../x.gguf``, ``a\\x`` or one
with a NUL or a newline in its name, so olah can never list them. A hostile or broken mirror can.
This server answers the few Hub routes that `llmctl pull` uses, with the JSON shapes the real Hub
gives, so huggingface_hub (and so llmctl) reads its answers as it would the Hub's:

- ``GET /api/models/ORG/REPO[/revision/REV]``: the repo's info (its commit ``sha``);
- ``GET /api/models/ORG/REPO/tree/REV[/PATH]``: the file listing (``type``, ``oid``, ``size``,
  ``path``), given verbatim, odd paths included;
- ``HEAD``/``GET /ORG/REPO/resolve/REV/PATH``: a file's metadata and bytes (ETag = its git blob
  id, X-Repo-Commit, Range requests answered with 206).

A file request for a path that is not listed (the HTTP client folds ``..`` in the URL, even out
of the resolve route) gets the listed file whose last path segment matches, so an unsafe path is
served as a hostile Hub would serve it. Every request is recorded in ``requests`` ("METHOD PATH").
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import urllib.parse


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandInHub:
    """``with StandInHub({"ORG/REPO": {path: bytes}}) as hub:`` serves at ``hub.url``."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.shas = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.requests: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> StandInHub:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep the test output clean
                pass

            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def file_requests(self) -> list[str]:
        """The requests for a file's content or metadata (anything outside /api/)."""
        return [r for r in self.requests if not r.split(" ", 1)[1].startswith("/api/")]

    # -- routes -------------------------------------------------------------------------------
    def _answer(self, h: http.server.BaseHTTPRequestHandler, *, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path)
        self.requests.append(f"{h.command} {path}")
        for repo, files in self.repos.items():
            sha = self.shas[repo]
            if path.startswith(f"/api/models/{repo}/tree/"):
                return self._json(h, [self._entry(p, d) for p, d in files.items()], body)
            if path in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main",
                        f"/api/models/{repo}/revision/{sha}"):
                return self._json(h, {"id": repo, "modelId": repo, "sha": sha, "private": False,
                                      "siblings": [{"rfilename": p} for p in files]}, body)
            m = re.match(rf"^/{re.escape(repo)}/resolve/[^/]+/(.*)$", path, re.S)
            if m:
                data = self._find(files, m.group(1))
                if data is not None:
                    return self._file(h, data, sha, body)
        if not path.startswith("/api/"):  # a resolve URL whose ``..`` the client folded away
            for repo, files in self.repos.items():
                data = self._find(files, path)
                if data is not None:
                    return self._file(h, data, self.shas[repo], body)
        self._send(h, 404, b'{"error": "Repository not found"}', {"Content-Type": "application/json",
                                                                   "X-Error-Code": "RepoNotFound"}, body)

    @staticmethod
    def _entry(path: str, data: bytes) -> dict:
        return {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}

    @staticmethod
    def _find(files: dict[str, bytes], rel: str) -> bytes | None:
        if rel in files:
            return files[rel]
        tail = rel.rsplit("/", 1)[-1]
        return next((d for p, d in files.items() if p.replace("\\", "/").rsplit("/", 1)[-1] == tail), None)

    def _file(self, h, data: bytes, sha: str, body: bool) -> None:
        headers = {"ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        m = re.match(r"bytes=(\d+)-(\d*)$", h.headers.get("Range") or "")
        if m and int(m.group(1)) < len(data):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(h, 206, data[start:end + 1], headers, body)
        self._send(h, 200, data, headers, body)

    def _json(self, h, obj, body: bool) -> None:
        self._send(h, 200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, body)

    @staticmethod
    def _send(h, code: int, data: bytes, headers: dict, body: bool) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
