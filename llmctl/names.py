"""The naming rule for what becomes a file or container name (profiles, tasks, models):
``[a-z0-9][a-z0-9_-]*``, at most 64 characters.

Checked wherever a name from a user becomes a path, so ``down /some/dir/app``, ``logs ../x``
or an empty name from an unset shell variable never reach the file system."""

from __future__ import annotations

import re

from .errors import InvalidName

NAME_PATTERN = "[a-z0-9][a-z0-9_-]*"
NAME_MAX = 64
RULE = f"names match {NAME_PATTERN} and have at most {NAME_MAX} characters"
_NAME = re.compile(NAME_PATTERN)
#: what lists the names of each kind (for the error's hint)
_LISTING = {"profile": "llmctl profiles list", "task": "llmctl tasks list", "model": "llmctl models list"}


def is_valid_name(name: object) -> bool:
    """True when ``name`` follows the rule (whole string: no trailing newline slips through)."""
    return isinstance(name, str) and len(name) <= NAME_MAX and _NAME.fullmatch(name) is not None


def check_name(name: object, what: str = "profile") -> str:
    """Return ``name`` if it follows the rule, else raise :class:`InvalidName` naming the rule."""
    if is_valid_name(name):
        return name  # type: ignore[return-value]
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    raise InvalidName(f"{shown} is not a valid {what} name: {RULE} (they become file names)",
                      what=what, listing=_LISTING.get(what, "llmctl --help"))
