"""A transaction's outbox rows, written in one statement right before it commits.

An intent enqueued inside ``atomic()`` needs its row in that transaction, and
nothing needs it there any sooner: until the commit, no other connection can
see it. So the rows wait on the connection, and the first thing its commit does
is one multi-row ``INSERT`` of those still wanted, instead of one round trip per
enqueue. A row is still wanted while its ``on_commit`` ticket is registered:
Django forgets the callbacks of a savepoint that rolls back, so a rolled-back
savepoint's rows are never written. A row its scope already wrote (a flush
inside the transaction) or dropped (a discard inside it) is skipped.

The commit is ``connection._commit``, wrapped on that connection object once
(the first time it has a row waiting); its ``_rollback`` forgets what waits.
If the ``INSERT`` fails, the commit raises before anything is committed, and
``atomic()`` rolls the whole transaction back and raises it: nothing was half
written, and the caller sees the error while the transaction is still theirs.
On PostgreSQL with psycopg 3's client-side cursors the ``INSERT`` carries the
``COMMIT`` in the same query (``_store.insert``), so the commit costs no extra
round trip; a ``COMMIT`` that fails there ends the transaction, and ``atomic()``
raises the same way.
"""

from __future__ import annotations

from typing import Any

from airlock.integrations.django.outbox._store import insert

__all__ = ["defer", "waiting"]

_WAITING = "_airlock_outbox_waiting"


def defer(connection: Any, entry: Any, ticket: Any, row: tuple[Any, ...]) -> None:
    """Write ``row`` (of ``entry``) right before ``connection`` commits, if ``ticket`` is still registered then."""
    rows = connection.__dict__.get(_WAITING)
    if rows is None:
        rows = []
        setattr(connection, _WAITING, rows)
        _wrap(connection, rows)
    rows.append((entry, ticket, row))


def waiting(connection: Any) -> int:
    """How many rows wait for ``connection``'s commit (for tests)."""
    return len(connection.__dict__.get(_WAITING) or ())


def _wrap(connection: Any, rows: list[tuple[Any, Any, tuple[Any, ...]]]) -> None:
    commit, rollback = connection._commit, connection._rollback

    def _commit() -> Any:
        if rows:
            # Where the INSERT carried the COMMIT, psycopg finds the transaction over
            # and commit() below sends nothing.
            _write(connection, rows)
        return commit()

    def _rollback() -> Any:
        rows.clear()
        return rollback()

    connection._commit = _commit
    connection._rollback = _rollback


def _write(connection: Any, rows: list[tuple[Any, Any, tuple[Any, ...]]]) -> None:
    taken = rows[:]
    rows.clear()
    registered = {id(hook[1]) for hook in connection.run_on_commit}
    wanted = [
        (entry, row)
        for entry, ticket, row in taken
        if not entry.written and not entry.dropped and id(ticket) in registered
    ]
    if wanted:
        insert(connection, [row for _entry, row in wanted], then_commit=True)
        for entry, _row in wanted:
            entry.written = True
