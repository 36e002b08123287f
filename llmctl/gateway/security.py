"""The gateway's own API key: where it comes from, when it is required, how it is checked.

- Bound to loopback (127.0.0.0/8, ::1, localhost), no key is needed; a key that is set is
  still required.
- Bound anywhere else, a key is required: ``LLMCTL_GATEWAY_KEY`` or ``--api-key-file`` (a file
  that only its owner can read, like ssh keys).
- Clients send ``Authorization: Bearer KEY`` (what the OpenAI clients send with ``api_key=``),
  or ``x-api-key: KEY`` (the Anthropic clients).
  ``GET /health`` needs no key. The key a client sends never goes upstream: the gateway sends
  each server its own key (the profile's ``api_key_env``) and never returns it.

Web pages in the user's browser can reach a loopback gateway too. Against them:

- Bound to loopback, only loopback ``Host`` values are answered (localhost, 127.x, [::1], with
  any port; plus ``--allow-host`` names): a page whose own name was made to resolve to
  127.0.0.1 (DNS rebinding) sends its own name and is refused.
- A request body must say ``Content-Type: application/json``: the types a page may send
  without asking first (text/plain, forms) are refused, so a cross-site POST cannot be a call.
- ``/upstream`` to a profile with its own key needs a gateway key (the server's key is added
  only to requests the gateway authenticated).
- No ``Access-Control-*`` header is relayed or sent: pages of other origins cannot read answers.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from ..errors import UsageError

KEY_ENV = "LLMCTL_GATEWAY_KEY"
OPEN_PATHS = ("/health", "/ui", "/ui/dashboard.js", "/ui/dashboard.css")  #: the dashboard's page carries no data
#: a Host header: a name or IPv4 address, or an [IPv6] address; then maybe :PORT
_HOST_RE = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_key_file(path: str | Path) -> str:
    """The key in ``path`` (first line); refused if others can read the file."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text()
    except OSError as exc:
        raise UsageError(f"--api-key-file {p}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"--api-key-file {p}: readable by others (mode {stat.S_IMODE(mode):o}); "
                         f"run `chmod 600 {p}`")
    key = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise UsageError(f"--api-key-file {p} is empty")
    return key


def resolve_key(host: str, key_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The key clients must send: from the file, else ``$LLMCTL_GATEWAY_KEY``; required (else
    UsageError) when ``host`` is not loopback."""
    environ = os.environ if env is None else env
    key = read_key_file(key_file) if key_file else (environ.get(KEY_ENV) or None)
    check_binding(host, key)
    return key


def check_binding(host: str, key: str | None) -> None:
    if key is None and not is_loopback(host):
        raise UsageError(f"binding {host} makes the gateway reachable from other machines: set an API key "
                         f"with ${KEY_ENV} or --api-key-file (clients then send `Authorization: Bearer KEY`)")


def authorized(headers: list[tuple[bytes, bytes]], key: str) -> bool:
    """True when the ASGI headers carry ``Authorization: Bearer KEY`` or ``x-api-key: KEY``
    (what Anthropic clients send), compared in constant time."""
    want = key.encode()
    for name, value in headers:
        v = value.strip()
        if name == b"authorization" and v[:7].lower() == b"bearer " and hmac.compare_digest(v[7:], want):
            return True
        if name == b"x-api-key" and hmac.compare_digest(v, want):
            return True
    return False


def normalize_host(name: str) -> str:
    """An ``--allow-host`` value as it is compared: lower case, without a port or brackets."""
    host = split_host(name)
    if host is None:
        raise UsageError(f"--allow-host {name!r}: expected a host name or address, e.g. llm.lan or 10.0.0.5")
    return host


def split_host(value: str) -> str | None:
    """The host part of a ``Host`` header (lower case, IPv6 without brackets); None if malformed."""
    m = _HOST_RE.fullmatch(value.strip().lower())
    return m.group(1).strip("[]") if m else None


def allowed_hosts(bind_host: str, extra: tuple[str, ...]) -> frozenset[str] | None:
    """The extra Host names answered besides loopback ones; None: every Host (bound beyond
    loopback without ``--allow-host``, where the key guards the gateway)."""
    if not is_loopback(bind_host) and not extra:
        return None
    return frozenset(extra)


def host_allowed(value: str | None, extra: frozenset[str]) -> bool:
    host = split_host(value) if value else None
    return host is not None and (is_loopback(host) or host in extra)


def is_json_type(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"
