"""The SQL the outbox runs on the request's path: few statements, no ORM on the hot path.

Every statement runs on the connection it is given, so it joins whatever
transaction is open there: a row written at enqueue lives and dies with the
caller's transaction (and savepoint).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airlock.integrations.django.outbox._models import HELD, PENDING

__all__ = ["CHUNK", "delete_undecided", "encode", "for_ids", "insert", "set_state"]

TABLE = "airlock_outbox"
COLUMNS = (
    "intent_id, task, executor, payload, state, attempts, created_at, available_at, claimed_by, written_by, last_error"
)
_VALUES = "(%s, %s, %s, %s, %s, 0, %s, %s, '', %s, '')"
_INSERT = f"INSERT INTO {TABLE} ({COLUMNS}) VALUES "
ROWS_PER_INSERT = 100  # 800 parameters a statement
CHUNK = 500  # ids per IN (...): well under SQLite's and MariaDB's parameter limits

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: Any, trace: Mapping[str, Any] | None = None
) -> str:
    """The row's payload, ``[args, kwargs, options]`` as JSON, and the enqueue's trace context if given.

    ``trace`` (the carrier a tracing integration filled at enqueue) is a fourth
    element, read by the relay only: a row written without tracing has three.

    Raises:
        TypeError: An argument (or a dispatch option) JSON cannot hold; the
            message names it, so the caller fixes it while its transaction is open.
    """
    try:
        return _dumps([args, kwargs, options, trace] if trace else [args, kwargs, options])
    except (TypeError, ValueError) as error:
        raise TypeError(_which_argument(task_name, args, kwargs, options, error)) from error


def _which_argument(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: Any, error: Exception
) -> str:
    labelled: list[tuple[str, Any]] = [(f"positional argument {n}", value) for n, value in enumerate(args)]
    labelled += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
    labelled += [(f"_dispatch_options[{name!r}]", value) for name, value in (options or {}).items()]
    for label, value in labelled:
        try:
            _dumps(value)
        except (TypeError, ValueError):
            return (
                f"the airlock outbox stores arguments as JSON, and {label} of {task_name} cannot be stored: "
                f"{value!r} ({error}). Pass JSON values (str, int, float, bool, None, lists, dicts with str "
                "keys), e.g. an id instead of a model instance, or an ISO string instead of a datetime"
            )
    return f"the airlock outbox could not store the arguments of {task_name} as JSON: {error}"


def insert(connection: Any, rows: Sequence[tuple[Any, ...]], *, then_commit: bool = False) -> bool:
    """Write rows: ``(intent_id, task, executor, payload, state, created_at, available_at, written_by)``.

    ``then_commit``: the caller commits right after; where the driver can send
    two statements as one query (psycopg 3 with client-side binding, Django's
    default), the last ``INSERT`` carries the ``COMMIT`` in the same round trip.
    Returns whether it did (the transaction is then over: psycopg sees it idle,
    and its own ``commit()`` sends nothing). If the ``INSERT`` fails, the server
    skips the ``COMMIT`` and the transaction is left failed, as without it.
    """
    committed = False
    with connection.cursor() as cursor:
        # One statement (one round trip) per ROWS_PER_INSERT rows, on every backend.
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start : start + ROWS_PER_INSERT]
            statement = _INSERT + ", ".join([_VALUES] * len(chunk))
            if then_commit and start + ROWS_PER_INSERT >= len(rows) and _simple_queries(cursor):
                statement += "; COMMIT"
                committed = True
            cursor.execute(statement, [value for row in chunk for value in row])
    return committed


def _simple_queries(cursor: Any) -> bool:
    """Whether ``cursor`` (Django's wrapper) sends its statements as one simple query, values merged in."""
    try:
        from psycopg import ClientCursor  # type: ignore[import-not-found,unused-ignore]  # psycopg 3 only
    except ImportError:
        return False
    raw = getattr(cursor, "cursor", None)
    return isinstance(raw, ClientCursor) and raw.connection._pipeline is None


def for_ids(
    connection: Any,
    head: str,
    values: Sequence[Any],
    ids: Sequence[Any],
    *,
    column: str = "intent_id",
    tail: str = "",
    tail_values: Sequence[Any] = (),
) -> int:
    """Run ``{head} WHERE {column} IN (...) {tail}`` over ``ids``, :data:`CHUNK` at a time; rows changed."""
    changed = 0
    with connection.cursor() as cursor:
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
            cursor.execute(
                f"{head} WHERE {column} IN ({', '.join(['%s'] * len(chunk))}){tail}",
                [*values, *chunk, *tail_values],
            )
            changed += max(cursor.rowcount, 0)
    return changed


def set_state(
    connection: Any,
    intent_ids: Sequence[str],
    state: str,
    *,
    only_from: Sequence[str] = (),
    lazy_flush: bool = False,
    line: Any = None,
    **extra: Any,
) -> int:
    """``UPDATE ... SET state = ...`` for the ids (only from the states ``only_from``, if given).

    ``lazy_flush``: on PostgreSQL, outside a transaction, the statement commits
    without waiting for its WAL flush (``synchronous_commit`` off for it alone).
    For the outbox's own marks only: a database crash in the next fraction of a
    second may forget one, which leaves the row ``pending`` (then held) or
    ``ready`` (then sent again, deduped), never lost. It saves the request a
    disk flush, most of the statement's time.

    ``line`` (a :class:`~._markline.MarkLine`, with ``lazy_flush``): the statement is
    sent on it without waiting for its answer, and the count returned is the
    number of ids (what would change); if it cannot be sent, it runs here.
    """
    assignments = ", ".join(["state = %s", *(f"{column} = %s" for column in extra)])
    tail = f" AND state IN ({', '.join(['%s'] * len(only_from))})" if only_from else ""
    head = f"UPDATE {TABLE} SET {assignments}"
    values = [state, *extra.values()]
    if lazy_flush and connection.vendor == "postgresql" and not connection.in_atomic_block:
        literal = _literals([*values, *intent_ids, *only_from])
        if literal is not None:
            changed = 0
            for start in range(0, len(intent_ids), CHUNK):
                chunk = intent_ids[start : start + CHUNK]
                statement = (head + f" WHERE intent_id IN ({', '.join(['%s'] * len(chunk))})" + tail) % tuple(
                    literal(value) for value in [*values, *chunk, *only_from]
                )
                statement = f"SET LOCAL synchronous_commit TO OFF; {statement}"
                if line is not None:
                    try:
                        line.send(statement)
                    except ConnectionError:
                        pass  # marked here instead
                    else:
                        changed += len(chunk)
                        continue
                with connection.cursor() as cursor:
                    # One simple query, so one implicit transaction: SET LOCAL applies to it alone.
                    cursor.execute(statement)
                    with contextlib.suppress(Exception):  # psycopg2 keeps only the last result
                        cursor.nextset()  # psycopg 3: from the SET's result to the UPDATE's
                    changed += max(cursor.rowcount, 0)
            return changed
    return for_ids(connection, head, values, intent_ids, tail=tail, tail_values=only_from)


_SAFE_TEXT = re.compile(r"[0-9A-Za-z_]{1,64}")


def _literals(values: Sequence[Any]) -> Any:
    """A function quoting each value as SQL, if every one is a plain id, state or number; else ``None``."""
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        if isinstance(value, str) and not _SAFE_TEXT.fullmatch(value):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None

    def literal(value: Any) -> str:
        return f"'{value}'" if isinstance(value, str) else repr(value)

    return literal


def delete_undecided(connection: Any, intent_ids: Sequence[str]) -> None:
    """Delete rows a scope discarded or a policy refused (never one already decided)."""
    for_ids(
        connection, f"DELETE FROM {TABLE}", (), intent_ids, tail=" AND state IN (%s, %s)", tail_values=(PENDING, HELD)
    )
