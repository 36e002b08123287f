"""Tokens and gated repos. The Hub mirror used elsewhere (olah) cannot serve a gated or private
repo, so this test runs `llmctl pull` against a stand-in Hub on loopback that answers every
request the way the Hub answers for a gated repo (HTTP 403 with ``X-Error-Code: GatedRepo``)
or a private one (401, ``RepoNotFound``), and records the Authorization header it was sent."""

from __future__ import annotations

import http.server
import threading

import pytest

from llmctl.errors import ExitCode

from .util import cli

TOKEN = "hf_llmctlTestToken0123456789"


@pytest.fixture
def standin_hub():
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if "test-org" in self.path:  # not huggingface_hub's own registry look-ups
                seen.append(self.headers.get("authorization"))
            gated = "/gated" in self.path
            body = (b'{"error": "Access to model test-org/gated is restricted. You must have access to it '
                    b'and be authenticated to access it. Please log in."}' if gated else
                    b'{"error": "Repository not found"}')
            self.send_response(403 if gated else 401)
            self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_gated_repo_says_to_accept_the_terms_and_sends_the_token(standin_hub, llmctl_home):
    url, seen = standin_hub
    r = cli("pull", "hf:test-org/gated-GGUF:Q4_K_M", env={"HF_ENDPOINT": url, "HF_TOKEN": ""})
    assert r.returncode == ExitCode.MODEL_MISSING, r.stderr
    assert "gated repo" in r.stderr and f"{url}/test-org/gated-GGUF" in r.stderr and "HF_TOKEN" in r.stderr
    assert seen and all(h is None for h in seen)  # no token: no Authorization header

    seen.clear()
    r = cli("pull", "hf:test-org/gated-GGUF:Q4_K_M", env={"HF_ENDPOINT": url, "HF_TOKEN": TOKEN})
    assert r.returncode == ExitCode.MODEL_MISSING
    assert seen and all(h == f"Bearer {TOKEN}" for h in seen)
    assert TOKEN not in r.stdout + r.stderr
    assert not (llmctl_home / "models" / "test-org--gated-gguf").exists()


def test_private_or_missing_repo_names_the_token(standin_hub, llmctl_home):
    url, seen = standin_hub
    r = cli("pull", "hf:test-org/private-GGUF", env={"HF_ENDPOINT": url, "HF_TOKEN": ""})
    assert r.returncode != 0
    assert "test-org/private-GGUF" in r.stderr and "HF_TOKEN" in r.stderr
    r = cli("pull", "hf:test-org/private-GGUF", env={"HF_ENDPOINT": url, "HF_TOKEN": TOKEN})
    assert r.returncode != 0 and TOKEN not in r.stderr and seen[-1] == f"Bearer {TOKEN}"
