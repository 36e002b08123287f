"""A small HTTP/1.1 client for the local servers: one request per connection, JSON bodies,
responses read whole or line by line (Server-Sent Events), one deadline for the whole exchange.

Why not httpx or http.client: `llmctl run` against a running server should cost little more
than the request itself, and importing either costs more than the request does here (httpx
~100 ms, http.client ~20 ms with its email parser; a socket is ~1 ms). The servers are
llama-server and vLLM on plain HTTP, usually on loopback; a remote profile's server may be on
https (the ssl module is imported only then).
"""

from __future__ import annotations

import socket
import time
from typing import Iterator


class HTTPError(OSError):
    """The connection failed or the response was not HTTP."""


class ConnectFailed(HTTPError):
    """Nothing accepted the connection (the server is not there)."""


class Timeout(HTTPError):
    """The deadline passed."""


class Response:
    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buf = b""
        self._eof = False
        line = self._line()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise HTTPError(f"not an HTTP response: {line[:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            h = self._line()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        cl = self.headers.get("content-length")
        self._left = int(cl) if cl is not None and not self._chunked else None
        self._chunk_left = 0
        self._done = self._left == 0

    # -- raw socket reading ---------------------------------------------------------------
    def _fill(self) -> bool:
        if self._eof:
            return False
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout("timed out waiting for the server")
            self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise Timeout("timed out waiting for the server") from None
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _line(self) -> bytes:
        while b"\n" not in self._buf:
            if not self._fill():
                out, self._buf = self._buf, b""
                return out
        i = self._buf.index(b"\n") + 1
        out, self._buf = self._buf[:i], self._buf[i:]
        return out

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise HTTPError("connection closed in the middle of a response")
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    # -- body -----------------------------------------------------------------------------
    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (de-chunked)."""
        if self._done:
            return
        if self._chunked:
            while True:
                size_line = self._line()
                if not size_line:
                    raise HTTPError("connection closed in the middle of a response")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    break
                data = self._exact(size)
                self._exact(2)  # CRLF after each chunk
                yield data
        elif self._left is not None:
            while self._left > 0:
                if not self._buf and not self._fill():
                    raise HTTPError("connection closed in the middle of a response")
                data, self._buf = self._buf[: self._left], self._buf[self._left:]
                self._left -= len(data)
                yield data
        else:  # read to close
            while True:
                if self._buf:
                    data, self._buf = self._buf, b""
                    yield data
                if not self._fill():
                    break
        self._done = True

    def lines(self) -> Iterator[bytes]:
        """The body line by line (for Server-Sent Events), as soon as each line is complete."""
        pending = b""
        for data in self.chunks():
            pending += data
            while b"\n" in pending:
                i = pending.index(b"\n") + 1
                yield pending[:i]
                pending = pending[i:]
        if pending:
            yield pending

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class TLSFailed(HTTPError):
    """The https handshake failed (most often: a certificate that does not verify)."""


def split_url(url: str) -> tuple[str, int, str]:
    """``http://host:port/path`` -> (host, port, path); IPv6 hosts in brackets. (urllib.parse
    would do, at the cost of importing it.)"""
    if not url.startswith("http://"):
        raise HTTPError(f"only http:// URLs are supported, not {url}")
    return _split(url, url[7:], 80)


def split_any(url: str) -> tuple[bool, str, int, str]:
    """``http(s)://host:port/path`` -> (tls, host, port, path)."""
    if url.startswith("https://"):
        return (True, *_split(url, url[8:], 443))
    return (False, *split_url(url))


def _split(url: str, rest: str, default_port: int) -> tuple[str, int, str]:
    netloc, slash, path = rest.partition("/")
    path = slash + path if slash else "/"
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port_s = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_s = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    try:
        port = int(port_s) if port_s else default_port
    except ValueError:
        raise HTTPError(f"bad port in {url}") from None
    return host or "127.0.0.1", port, path


def _wrap_tls(sock: socket.socket, host: str, verify: bool) -> socket.socket:
    """The connection with TLS on it; the certificate and the host name checked unless ``verify``
    is off (a profile's ``verify: false``)."""
    import ssl  # only for https: most servers are local, on plain http

    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise TLSFailed(f"the certificate of {host} did not verify ({exc.verify_message}); "
                        "`verify: false` in the profile skips the check, for a server you trust") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise TLSFailed(f"TLS handshake with {host} failed: {exc}") from None


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            deadline: float | None = None, connect_timeout: float = 5.0, verify: bool = True) -> Response:
    """Send one request and return the response once its headers are in. ``deadline`` is on
    the monotonic clock and covers everything, including reading the body later. An https URL
    is verified unless ``verify`` is False."""
    tls, host, port, path = split_any(url)
    timeout = connect_timeout
    if deadline is not None:
        timeout = max(0.001, min(timeout, deadline - time.monotonic()))
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise Timeout(f"timed out connecting to {host}:{port}") from None
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    if tls:
        sock = _wrap_tls(sock, host, verify)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hosthdr = f"[{host}]" if ":" in host else host
        lines = [f"{method} {path} HTTP/1.1", f"Host: {hosthdr}:{port}", "Connection: close",
                 "User-Agent: llmctl"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock.settimeout(None if deadline is None else max(0.001, deadline - time.monotonic()))
        sock.sendall(head + (body or b""))
        return Response(sock, deadline)
    except TimeoutError:
        sock.close()
        raise Timeout("timed out sending the request") from None
    except (HTTPError, ValueError) as exc:
        sock.close()
        raise exc if isinstance(exc, HTTPError) else HTTPError(str(exc)) from None
    except OSError as exc:
        sock.close()
        raise HTTPError(f"connection to {host}:{port} failed: {exc.strerror or exc}") from None
