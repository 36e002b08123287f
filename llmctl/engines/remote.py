"""A remote profile's server (``engine: remote``): one that llmctl reaches but does not start.
Here is the one probe of it (`status`, the router, `up`'s note and the gateway all ask it): its
health path, else ``/health`` and then ``/v1/models`` for servers without a health endpoint;
https verified unless the profile says ``verify: false``; the key, when the profile names one,
only in the Authorization header."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ApiKeyMissing
from ..profiles.schema import Profile
from .apikey import api_key

if TYPE_CHECKING:
    import ssl

DEFAULT_PATHS = ("/health", "/v1/models")


@dataclass
class Probe:
    """What one probe of a remote server found."""

    reachable: bool
    latency_ms: float | None = None  #: of the request that answered 200
    path: str | None = None  #: the path that answered
    message: str = ""  #: why it is not reachable

    @property
    def state(self) -> str:
        return "running" if self.reachable else "unreachable"


def probe(profile: Profile, timeout: float = 3.0) -> Probe:
    """GET the profile's health path (or the default ones, in order) and time the answer."""
    try:
        key = api_key(profile)
    except ApiKeyMissing:  # probed without it (health is public on most servers); a request says why
        key = None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    paths = (profile.health,) if profile.health else DEFAULT_PATHS
    message = ""
    for path in paths:
        t0 = time.monotonic()
        status, why = _get(profile, path, headers, timeout)
        if status == 200:
            return Probe(True, round((time.monotonic() - t0) * 1000, 1), path)
        if status is None:
            return Probe(False, message=why)
        message = f"GET {path} answered HTTP {status}"
        if status in (401, 403):
            message += f" (the key was refused: check api_key_env, now {profile.api_key_env or 'not set'})"
            break
    return Probe(False, message=message)


def _get(profile: Profile, path: str, headers: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """(HTTP status, "") of ``GET base+path``, or (None, why) when no answer came."""
    import http.client  # only when a remote profile is probed

    scheme, _, rest = profile.url.partition("://")
    netloc, slash, prefix = rest.partition("/")
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(netloc, timeout=timeout, context=_tls_context(profile.verify))
    else:
        conn = http.client.HTTPConnection(netloc, timeout=timeout)
    try:
        conn.request("GET", (slash + prefix).rstrip("/") + path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, ""
    except (OSError, http.client.HTTPException) as exc:
        return None, _why(profile, exc)
    finally:
        conn.close()


def _tls_context(verify: bool) -> ssl.SSLContext:
    import ssl

    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _why(profile: Profile, exc: BaseException) -> str:
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the certificate of {profile.url} did not verify ({exc.verify_message}); `verify: false` "
                f"in the profile skips the check, for a server you trust ({profile.where('url')})")
    if isinstance(exc, TimeoutError):
        return f"no answer from {profile.url} in time"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"cannot reach {profile.url}: {text}"
