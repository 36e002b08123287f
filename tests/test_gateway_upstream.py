"""The gateway's own HTTP/1.1 client for its servers (llmctl/gateway/upstream.py): keep-alive
reuse against a real llama-server (which closes a connection every 100 requests), and its
failure modes against a misbehaving socket server, a fake on purpose (a real server does these
only when it breaks): closing before answering, closing in the middle of a stream, a pooled
keep-alive connection the server has closed, headers that never come; bodies by length, chunked
and until the connection closes; hop-by-hop headers. Then the same failures through a gateway,
with a real llama-server as the fallback."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
from collections.abc import Callable

import httpx
import pytest

from .util import end_process, free_port, wait_for

HI = [{"role": "user", "content": "Hi"}]
OK_BODY = b'{"status":"ok"}'


# -- a server that misbehaves on purpose --------------------------------------------------------
def _ok(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n" + OK_BODY)
    return True


def _ok_then_close(conn: socket.socket) -> bool:
    _ok(conn)
    return False  # closed after a whole answer that promised keep-alive: a stale pooled connection


def _close(conn: socket.socket) -> bool:
    return False  # the request read, no answer


def _chunked(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"one ", b"two ", b"three"):
        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.sendall(b"0\r\n\r\n")
    return True


def _until_close(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end")
    return False


def _stream_then_break(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for word in ("Hello", " there"):
        event = b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % word.encode()
        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
    return False  # gone without the last chunk


def _silent(conn: socket.socket) -> bool:
    conn.recv(1)  # nothing sent; until the client gives up and closes
    return False


def _hop(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                 b"Keep-Alive: timeout=30\r\nAccess-Control-Allow-Origin: *\r\nX-Custom: kept\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(OK_BODY), OK_BODY))
    return True


class Misbehaving:
    """A socket server answering each request as ``plan[path]`` says (the behaviours in order,
    the last one repeated; /health is always answered). ``seen``: (connection number, method,
    path) of each request read; ``closed``: connections it has closed."""

    def __init__(self, plan: dict[str, list[Callable[[socket.socket], bool]]]) -> None:
        self.plan = {path: list(ways) for path, ways in plan.items()}
        self.seen: list[tuple[int, str, str]] = []
        self.closed = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns += 1
            threading.Thread(target=self._serve, args=(conn, self._conns), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        f = conn.makefile("rb")
        try:
            while (line := f.readline()).strip():
                method, path = line.decode().split()[:2]
                headers = {}
                while (h := f.readline()) not in (b"\r\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                f.read(int(headers.get("content-length", 0)))
                if path != "/health":
                    self.seen.append((n, method, path))
                if not (_ok if path == "/health" else self._next(path))(conn):
                    break
        except OSError:
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            f.close()
            conn.close()
            self.closed += 1

    def _next(self, path: str) -> Callable[[socket.socket], bool]:
        ways = self.plan.get(path) or [_ok]
        return ways.pop(0) if len(ways) > 1 else ways[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def misbehaving():
    made: list[Misbehaving] = []

    def make(plan: dict[str, list[Callable[[socket.socket], bool]]]) -> Misbehaving:
        made.append(Misbehaving(plan))
        return made[-1]

    yield make
    for m in made:
        m.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine on asyncio's loop, and on uvloop's (the one `serve` uses where installed)."""
    if request.param == "asyncio":
        return asyncio.run
    uvloop = pytest.importorskip("uvloop")
    return uvloop.run


def _origin(url: str, read_timeout: float = 30.0):
    from llmctl.gateway.upstream import Origin, split_url

    scheme, host, port, _ = split_url(url)
    return Origin(scheme, host, port, read_timeout=read_timeout)


# -- the client against the misbehaving server ---------------------------------------------------
def test_a_server_closing_before_it_answers_is_before_first_byte_and_not_retried(misbehaving, run):
    from llmctl.gateway.upstream import BeforeFirstByte

    server = misbehaving({"/v1/chat/completions": [_close], "/x": [_close]})

    async def go() -> None:
        origin = _origin(server.url)
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/x")):
            with pytest.raises(BeforeFirstByte, match="closed the connection without answering"):
                await origin.request(method, path, [], b"{}" if method == "POST" else None)
        origin.close()

    run(go())
    assert [(m, p) for _, m, p in server.seen] == [("POST", "/v1/chat/completions"), ("GET", "/x")]  # once each


def test_a_pooled_connection_the_server_closed_is_replaced_not_an_error(misbehaving, run):
    """The server answers with keep-alive, then closes the idle connection: the next request,
    POST included, goes on a fresh connection, and the server sees each request once."""
    server = misbehaving({"/a": [_ok_then_close]})

    async def go() -> list[int]:
        origin = _origin(server.url)
        codes = []
        for i, method in enumerate(("GET", "POST", "POST", "GET")):
            resp = await origin.request(method, "/a", [], b"{}" if method == "POST" else None)
            codes.append(resp.status_code)
            assert await resp.read() == OK_BODY
            # blocking, on purpose: the loop has not seen the close when the next request takes the connection
            wait_for(lambda i=i: server.closed >= i + 1, 10, "the server's close")
        origin.close()
        assert origin.opened == 4
        return codes

    assert run(go()) == [200, 200, 200, 200]
    assert len(server.seen) == 4 and len({n for n, _, _ in server.seen}) == 4


def test_a_reused_connection_closed_at_the_request_is_sent_again_only_when_safe(misbehaving, run):
    """The server answers one request, keeps the connection, and closes it when the next comes,
    unanswered: a GET is sent again on a fresh connection; a POST is not (it may have been
    applied): BeforeFirstByte, and the server saw it once."""
    from llmctl.gateway.upstream import BeforeFirstByte

    server = misbehaving({"/g": [_ok, _close, _ok], "/p": [_ok, _close, _ok]})

    async def go() -> None:
        origin = _origin(server.url)
        for path, method in (("/g", "GET"), ("/p", "POST")):
            first = await origin.request(method, path, [], None)
            assert await first.read() == OK_BODY
            if method == "GET":
                again = await origin.request(method, path, [], None)
                assert again.status_code == 200 and await again.read() == OK_BODY
            else:
                with pytest.raises(BeforeFirstByte):
                    await origin.request(method, path, [], None)
        origin.close()

    run(go())
    gets = [n for n, m, _ in server.seen if m == "GET"]
    posts = [n for n, m, _ in server.seen if m == "POST"]
    assert len(gets) == 3 and gets[0] == gets[1] != gets[2]  # the retry on a connection of its own
    assert len(posts) == 2 and posts[0] == posts[1]


def test_headers_that_never_come_time_out(misbehaving, run):
    from llmctl.gateway.errors import UpstreamTimeout
    from llmctl.gateway.proxy import Upstreams
    from llmctl.gateway.upstream import HeadTimeout

    server = misbehaving({"/slow": [_silent]})

    async def go() -> None:
        origin = _origin(server.url, read_timeout=0.3)
        with pytest.raises(HeadTimeout):
            await origin.request("GET", "/slow", [], None)
        origin.close()
        ups = Upstreams(0.3)
        with pytest.raises(UpstreamTimeout) as err:
            await ups.open("p", "GET", server.url, "/slow", [], None)
        assert err.value.status == 504 and "--upstream-timeout" in err.value.message
        await ups.aclose()

    run(go())
    wait_for(lambda: server.closed == 2, 10, "the silent connections to be closed by the client")


def test_bodies_by_length_chunked_and_until_the_connection_closes(misbehaving, run):
    server = misbehaving({"/len": [_ok], "/chunked": [_chunked], "/end": [_until_close]})

    async def go() -> list[bytes]:
        origin = _origin(server.url)
        out = []
        for path in ("/len", "/chunked", "/len", "/end"):
            out.append(await (await origin.request("GET", path, [], None)).read())
        assert origin.opened == 1  # one connection for all (the last answer ends it)
        origin.close()
        return out

    assert run(go()) == [OK_BODY, b"one two three", OK_BODY, b"to the end"]


def test_a_stream_broken_mid_way_gives_what_came_then_an_error(misbehaving, run):
    from llmctl.gateway.upstream import UpstreamError

    server = misbehaving({"/s": [_stream_then_break]})

    async def go() -> bytes:
        origin = _origin(server.url)
        resp = await origin.request("GET", "/s", [], None)
        got = b""
        with pytest.raises(UpstreamError):
            async for piece in resp.aiter_raw():
                got += piece
        origin.close()
        return got

    assert run(go()).count(b"data: ") == 2


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(misbehaving, run):
    from llmctl.gateway.upstream import BeforeFirstByte

    server = misbehaving({})

    async def go() -> None:
        origin = _origin(server.url)
        with pytest.raises(BeforeFirstByte, match="line break"):
            await origin.request("GET", "/x", [("authorization", "Bearer k\r\nx-injected: 1")], None)
        origin.close()

    run(go())
    assert server.seen == []


# -- a real llama-server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory, smollm2, llama_server):
    """A llama-server as a plain process (the gateway reaches it as a remote profile)."""
    d = tmp_path_factory.mktemp("upstream")
    port = free_port()
    log = open(d / "server.log", "wb")
    proc = subprocess.Popen([llama_server, "-m", str(smollm2), "--host", "127.0.0.1", "--port", str(port),
                             "-c", "512", "-t", "1"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: proc.poll() is not None or up(), 120, "llama-server")
        assert proc.poll() is None, (d / "server.log").read_text()[-2000:]
        yield url
    finally:
        end_process(proc)
        log.close()


@pytest.mark.engine
def test_keep_alive_with_a_real_llama_server_and_its_close_every_100_requests(real):
    """150 requests over the pool: every one answered, on a few connections (llama-server says
    `Connection: close` on every 100th answer of a connection); a HEAD; a dropped pool closes them."""
    from llmctl.gateway.proxy import Upstreams

    async def go() -> tuple[list[int], int, bool, int]:
        ups = Upstreams(60)
        codes = []
        for _ in range(150):
            resp = await ups.open("real", "GET", real, "/health", [("accept", "application/json")], None)
            codes.append(resp.status_code)
            await resp.read()
        head = await ups.open("real", "HEAD", real, "/health", [], None)  # a length, and no body to wait for
        codes.append(head.status_code)
        assert await head.read() == b""
        body = json.dumps({"messages": HI, "max_tokens": 1}).encode()
        resp = await ups.open("real", "POST", real, "/v1/chat/completions", [("content-type", "application/json")],
                              body)
        chat = json.loads(await resp.read())
        codes.append(resp.status_code)
        origin = ups.origin("real", real)
        idle = list(origin.idle)
        ups.drop("real")
        await asyncio.sleep(0.1)
        return codes, origin.opened, bool(idle) and all(c.lost for c in idle), chat["usage"]["completion_tokens"]

    codes, opened, dropped, tokens = asyncio.run(go())
    assert codes == [200] * 152 and tokens == 1
    assert 2 <= opened < 10  # not one per request; at least two (the server closed one after 100)
    assert dropped


# -- through a gateway ------------------------------------------------------------------------
@pytest.fixture
def gateway(tmp_path):
    """Start a gateway (in this process) on a profile file's text; stopped afterwards."""
    started = []

    def start(text: str, **options):
        from llmctl import load_profiles
        from llmctl.gateway import GatewayConfig, start_in_thread
        from llmctl.paths import Paths

        f = tmp_path / "llmctl.yaml"
        f.write_text(text)
        gw = start_in_thread(load_profiles([str(f)]), GatewayConfig(port=0, refresh_interval=0, **options),
                             paths=Paths.from_env())
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.mark.engine
def test_through_the_gateway_a_server_closing_before_it_answers_passes_to_the_fallback(misbehaving, real, gateway):
    server = misbehaving({"/v1/chat/completions": [_close]})
    gw = gateway(f"""
profiles:
  flaky: {{engine: remote, url: "{server.url}"}}
  real: {{engine: remote, url: "{real}"}}
tasks:
  t: {{profile: flaky, fallback: [real], max_tokens: 1}}
""")
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "t", "messages": HI}, timeout=60)
    assert r.status_code == 200 and r.headers["x-llmctl-profile"] == "real"
    assert r.json()["usage"]["completion_tokens"] == 1
    assert [(m, p) for _, m, p in server.seen] == [("POST", "/v1/chat/completions")]


def test_through_the_gateway_a_broken_stream_ends_with_an_error_event_and_slow_headers_are_504(misbehaving,
                                                                                             gateway):
    server = misbehaving({"/v1/chat/completions": [_stream_then_break, _silent], "/hop": [_hop]})
    gw = gateway(f'profiles:\n  flaky: {{engine: remote, url: "{server.url}"}}\n', upstream_timeout=0.5)
    body = {"model": "flaky", "messages": HI, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert len(events) == 3 and "delta" in events[0]
    assert "flaky: the server stopped in the middle of the answer" in json.loads(events[-1])["error"]["message"]
    slow = httpx.post(gw.url + "/v1/chat/completions", json={"model": "flaky", "messages": HI}, timeout=30)
    assert slow.status_code == 504 and slow.json()["error"]["type"] == "upstream_timeout"
    hop = httpx.get(gw.url + "/upstream/flaky/hop", timeout=30)  # relayed: the body, not the hop-by-hop headers
    assert hop.status_code == 200 and hop.content == OK_BODY and hop.headers["x-custom"] == "kept"
    assert not {"keep-alive", "transfer-encoding", "access-control-allow-origin"} & set(hop.headers)
    assert hop.headers["content-length"] == str(len(OK_BODY))
