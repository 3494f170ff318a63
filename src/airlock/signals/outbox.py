"""The outbox's events: what the relay and the background publisher do.

None of them is on an intent's path through a scope (those are in
:mod:`airlock.signals`); they tell operators what happens to rows after the
commit. The structlog bridge (:func:`airlock.integrations.structlog.instrument`)
logs each as an ``airlock.outbox.*`` event; without it, the relay logs the same
facts to the standard library's ``airlock.integrations.django.outbox`` logger.

.. versionadded:: 0.1
"""

from __future__ import annotations

from airlock._signal import Signal

__all__ = [
    "ALL",
    "handoff_full",
    "relay_batch",
    "relay_paused",
    "relay_progress",
    "relay_started",
    "relay_stopped",
    "row_dead",
    "row_failed",
    "rows_held",
    "rows_recovered",
    "task_unresolved",
]

relay_started = Signal(
    "relay_started",
    doc="""A relay began serving.

    Sender: the ``Relay``. Keyword arguments: ``databases``, ``batch_size``,
    ``poll`` (seconds) and ``retention`` (seconds, or ``None`` when the relay
    deletes nothing).
    """,
)

relay_stopped = Signal(
    "relay_stopped",
    doc="""A relay stopped (SIGTERM, ``stop()``), having finished or released its batch. Sender: the ``Relay``.""",
)

relay_batch = Signal(
    "relay_batch",
    doc="""A relay published one claimed batch.

    Sender: the ``Relay``. Keyword arguments: ``database``, ``sent``, ``failed``,
    ``dead``, ``released`` (rows given back untried) and ``seconds``.
    """,
)

relay_paused = Signal(
    "relay_paused",
    doc="""The broker is unreachable: the relay pauses without spending attempts.

    Sender: the ``Relay``. Keyword arguments: ``error`` and ``seconds``.
    """,
)

relay_progress = Signal(
    "relay_progress",
    doc="""What a running relay did in the last ``PROGRESS_EVERY`` seconds (and at its stop).

    Sender: the ``Relay``. Keyword arguments: ``sent``, ``failed``, ``dead``,
    ``held``, ``recovered`` (rows of writers that died undecided),
    ``unresolved`` (how many task names this process could not resolve),
    ``purged`` (rows and processed-intent records deleted by ``RETENTION``)
    and ``seconds`` (the interval).
    """,
)

row_failed = Signal(
    "row_failed",
    doc="""A row's publish failed for a reason of its own; it is retried later.

    Sender: the ``Relay``. Keyword arguments: ``database``, ``intent_id``,
    ``task``, ``attempts``, ``retry_in`` (seconds) and ``error`` (text).
    """,
)

row_dead = Signal(
    "row_dead",
    doc="""A row failed ``MAX_ATTEMPTS`` times and is dead-lettered (``airlock_requeue --dead``).

    Sender: the ``Relay``. Keyword arguments: ``database``, ``intent_id``,
    ``task``, ``attempts`` and ``error`` (text).
    """,
)

rows_held = Signal(
    "rows_held",
    doc="""Rows committed long ago whose scope never decided were held for a person.

    Sender: the ``Relay``. Keyword arguments: ``database`` and ``count``.
    """,
)

rows_recovered = Signal(
    "rows_recovered",
    doc="""The relay found the rows of a writer process that died before its scope decided.

    Their transaction committed; the writer's lock on the database is gone.
    ``OUTBOX["UNDECIDED"]`` chose what became of them. Sender: the ``Relay``.
    Keyword arguments: ``database``, ``writer`` (its id, ``key:host:pid``),
    ``count`` and ``state`` (``"ready"``: they will be delivered, or ``"held"``).
    """,
)

task_unresolved = Signal(
    "task_unresolved",
    doc="""The relay's process cannot resolve a task name that rows carry: a configuration error.

    No attempt is spent: the rows are released at once, for a relay that can
    resolve the name, and this relay skips that name until it restarts. Sent
    once per ``(executor, task)`` per relay. Sender: the ``Relay``. Keyword
    arguments: ``database`` (where it was first met), ``executor`` (the row's
    carrier key), ``task``, ``error`` (text) and ``fix`` (the line to add).
    """,
)

handoff_full = Signal(
    "handoff_full",
    doc="""The background publisher's hand-off was full, so a scope published inline.

    Sender: the scope. Keyword arguments: ``rows`` (how many it published inline)
    and ``depth`` (how many were waiting). Raise ``HANDOFF_LIMIT``, or look at
    why the broker is slow, if this fires often.
    """,
)

ALL: tuple[Signal, ...] = (
    relay_started,
    relay_stopped,
    relay_batch,
    relay_paused,
    relay_progress,
    row_failed,
    row_dead,
    rows_held,
    rows_recovered,
    task_unresolved,
    handoff_full,
)
