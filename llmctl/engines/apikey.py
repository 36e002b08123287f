"""A profile's API key (``api_key_env``): the one place that reads the variable and refuses a
missing one, for the server that checks the key (engines) and the clients that send it
(`run`, the gateway)."""

from __future__ import annotations

import os

from ..errors import ApiKeyMissing
from ..profiles.schema import Profile


def api_key(profile: Profile) -> str | None:
    """The key's value, None when the profile's server wants no key. Raises :class:`ApiKeyMissing`
    when the variable is unset or empty. Callers that build a server command only check: the
    value reaches the server from the keeper's own environment, never through argv or a spec."""
    var = profile.api_key_env
    if not var:
        return None
    value = os.environ.get(var)
    if not value:
        raise ApiKeyMissing(f"profile {profile.name!r} wants an API key from ${var}, which is not set "
                            f"({profile.where('api_key_env')})", var=var, profile=profile.name)
    return value
