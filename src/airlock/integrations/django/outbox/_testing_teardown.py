"""Close the outbox's own connections right before Django drops a test database.

pytest-django and Django's own test runner (``manage.py test``) both drop a
test database through ``connection.creation.destroy_test_db(...)``, which
closes Django's connection and then runs ``DROP DATABASE``. A connection the
outbox holds beside Django's (``_own_connections``) would still be there:
PostgreSQL then waits five seconds for it, refuses the drop ("is being accessed
by other users") and leaves the database behind.

So the first time the outbox opens a connection of its own on an alias,
:func:`close_before_teardown` wraps ``destroy_test_db`` of that alias's
backend so that it closes them first. A project without the outbox, or whose
outbox never opened a connection of its own, is left untouched.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections  # type: ignore[import-untyped]  # Django ships no type hints

__all__ = ["close_before_teardown"]

_WRAPPED = "_airlock_closes_own_connections"
_lock = threading.Lock()


def close_before_teardown(alias: str, close: Callable[[str], None]) -> None:
    """Make the dropping of ``alias``'s test database call ``close(alias)`` first.

    ``close`` is ``_own_connections.close_own_connections``, passed in so that
    this module needs nothing of the registry it serves.
    """
    # The class, not the one ``creation`` object: ``connections[alias]`` is a
    # wrapper per thread, and the publisher opens its connection on a thread of
    # its own, while the test runner drops the database through the main
    # thread's wrapper, which this thread cannot reach.
    creation = type(connections[alias].creation)
    with _lock:
        original = creation.destroy_test_db
        if getattr(original, _WRAPPED, False):
            return

        @functools.wraps(original)
        def destroy_test_db(self: Any, *args: Any, **kwargs: Any) -> Any:
            close(self.connection.alias)
            return original(self, *args, **kwargs)

        setattr(destroy_test_db, _WRAPPED, True)
        creation.destroy_test_db = destroy_test_db
