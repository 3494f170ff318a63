"""Connections the outbox opens beside Django's own, closed when a test database goes away.

The mark line, the background publisher's connection and a writer's liveness
lock each hold a database connection of the process's own. Django does not know
of them, so a test run that drops its test database would find them still
connected. Each registers a closer here under its database alias; the teardown
hook (see ``_testing_teardown``) calls them before the database is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["close_own_connections", "track", "untrack"]

_lock = threading.Lock()
_closers: dict[str, list[Callable[[], None]]] = {}


def track(alias: str, close: Callable[[], None]) -> None:
    """Remember ``close`` as the way to close a connection of the process's own to ``alias``."""
    with _lock:
        _closers.setdefault(alias, []).append(close)


def untrack(alias: str, close: Callable[[], None]) -> None:
    """Forget ``close`` (its connection was closed some other way)."""
    with _lock:
        closers = _closers.get(alias, [])
        if close in closers:
            closers.remove(close)


def close_own_connections(alias: str | None = None) -> None:
    """Close every tracked connection to ``alias`` (every alias if ``None``); errors are the closer's own."""
    with _lock:
        if alias is None:
            taken = [close for closers in _closers.values() for close in closers]
            _closers.clear()
        else:
            taken = _closers.pop(alias, [])
    for close in taken:
        close()
