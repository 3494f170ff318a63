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
    "relay_started",
    "relay_stopped",
    "row_dead",
    "row_failed",
    "rows_held",
]

relay_started = Signal(
    "relay_started",
    doc="""A relay began serving. Sender: the ``Relay``. Keyword arguments: ``databases``.""",
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
    row_failed,
    row_dead,
    rows_held,
    handoff_full,
)
