"""Checks of the environment that airlock's guarantees depend on."""

from __future__ import annotations

import warnings
from importlib import metadata

__all__ = ["warn_if_greenlet_shares_context"]

# greenlet gave each greenlet its own contextvars.Context in 0.4.17.
_FIRST_ISOLATING_GREENLET = (0, 4, 17)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def warn_if_greenlet_shares_context(version: str | None = None) -> bool:
    """Warn when the installed greenlet is too old to isolate scopes per greenlet.

    Returns whether it warned. ``version`` overrides the installed one (for tests).
    """
    if version is None:
        try:
            version = metadata.version("greenlet")
        except metadata.PackageNotFoundError:
            return False
    if _version_tuple(version) >= _FIRST_ISOLATING_GREENLET:
        return False
    warnings.warn(
        f"greenlet {version} shares one contextvars context between greenlets, so "
        "concurrent gevent/eventlet units of work would see each other's airlock scope. "
        "Upgrade: pip install 'greenlet>=0.4.17'.",
        RuntimeWarning,
        stacklevel=3,
    )
    return True
