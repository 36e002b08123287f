"""Errors the gateway answers with: an HTTP status and an OpenAI-shaped body
(``{"error": {"message", "type", "code"}}``). They are llmctl errors, so Python callers can
catch them like any other."""

from __future__ import annotations

from ..errors import LlmctlError, NoServerAvailable, UsageError


class GatewayHTTPError(LlmctlError):
    status = 500
    kind = "server_error"

    def body(self) -> dict:
        err = {"message": self.message, "type": self.kind, "code": self.status}
        err.update({k: v for k, v in self.facts.items() if k in ("profile", "task", "state")})
        return {"error": err}


class BadRequest(GatewayHTTPError, UsageError):
    """The request cannot be read (not JSON, no messages...)."""

    status, kind = 400, "invalid_request_error"


class Unauthorized(GatewayHTTPError):
    """No key, or the wrong one, where the gateway wants one."""

    status, kind = 401, "authentication_error"


class Forbidden(GatewayHTTPError):
    """A request the gateway will not serve from where it comes: a Host that is not its own
    (DNS rebinding), or ``/upstream`` to a keyed server for a caller nobody authenticated."""

    status, kind = 403, "permission_error"


class PayloadTooLarge(GatewayHTTPError):
    """A request body over ``serve --max-body-size``."""

    status, kind = 413, "request_too_large"


class UnsupportedMediaType(GatewayHTTPError):
    """A request body that does not say ``Content-Type: application/json``."""

    status, kind = 415, "invalid_request_error"


class UnknownModel(GatewayHTTPError):
    """The request's `model` is no task, profile or served model name."""

    status, kind = 404, "model_not_found"


class Busy(GatewayHTTPError, NoServerAvailable):
    """The profile already serves its limit of concurrent requests (429)."""

    status, kind = 429, "rate_limit_exceeded"


class Unavailable(GatewayHTTPError, NoServerAvailable):
    """No server can take the request: a start failed, the budget cannot fit it, the wait ran out."""

    status, kind = 503, "server_unavailable"


class NotRunning(Unavailable):
    """A fallback that is not running, asked without permission to start it."""


class UpstreamFailed(GatewayHTTPError):
    """The server broke the exchange after it started answering, or refused the gateway's key."""

    status, kind = 502, "upstream_error"


class UpstreamTimeout(GatewayHTTPError):
    status, kind = 504, "upstream_timeout"
