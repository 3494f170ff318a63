"""Connections the outbox opens beside Django's own, closed when a test database goes away.

The mark line, the background publisher's connection and a writer's liveness
lock each hold a database connection of the process's own. Django does not know
of them, so a test run that drops its test database would find them still
connected. Each registers a closer here under its database alias; the teardown
hook (see ``_testing_teardown``) calls them before the database is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from airlock.integrations.django.outbox._testing_teardown import close_before_teardown

__all__ = ["close_own_connections", "track", "untrack"]

_log = logging.getLogger("airlock.integrations.django.outbox")
_lock = threading.Lock()
_closers: dict[str, list[Callable[[], None]]] = {}
_hooked: set[str] = set()  # aliases whose test-database teardown closes them (``_testing_teardown``)


def track(alias: str, close: Callable[[], None]) -> None:
    """Remember ``close`` as the way to close a connection of the process's own to ``alias``.

    The first one on an alias also installs the hook that calls it before a
    test database of that alias is dropped (so a project whose outbox opens no
    connection of its own pays nothing).
    """
    with _lock:
        _closers.setdefault(alias, []).append(close)
        first = alias not in _hooked
        _hooked.add(alias)
    if first:
        close_before_teardown(alias, close_own_connections)


def untrack(alias: str, close: Callable[[], None]) -> None:
    """Forget ``close`` (its connection was closed some other way)."""
    with _lock:
        closers = _closers.get(alias, [])
        if close in closers:
            closers.remove(close)


def close_own_connections(alias: str | None = None) -> None:
    """Close every tracked connection to ``alias`` (every alias if ``None``).

    A closer that raises is logged, and the others still run: the database is
    about to be dropped, and each connection left open would stop that.
    """
    with _lock:
        if alias is None:
            taken = [close for closers in _closers.values() for close in closers]
            _closers.clear()
        else:
            taken = _closers.pop(alias, [])
    for close in taken:
        try:
            close()
        except Exception:
            _log.exception("airlock outbox: closing a connection of its own failed (%r)", close)
