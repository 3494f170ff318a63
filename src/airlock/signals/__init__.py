"""The events of a scope's life, one ``blinker`` signal each.

The sender is always the :class:`~airlock.Scope`; everything else arrives as
keyword arguments. Receivers run in the order they were connected, after
airlock's own receivers where the docs of a signal say so. For one intent,
``intent_enqueued`` always comes before ``intent_dropped``, ``intent_released``,
``intent_dispatched`` or ``dispatch_failed``.

A receiver that raises is logged on the ``airlock`` logger and ignored: it
never loses or reorders intents. The one exception is
:class:`~airlock.PolicyViolation` raised from a receiver of
``intent_enqueued``, which refuses the intent, exactly as a policy's
``on_enqueue`` does.

Connect with ``weak=False`` (or keep a reference) for receivers defined inside
a function, as with any blinker signal.

.. versionadded:: 0.1
"""

from __future__ import annotations

from airlock._errors import PolicyViolation
from airlock._signal import Signal

__all__ = [
    "ALL",
    "Signal",
    "dispatch_failed",
    "intent_captured",
    "intent_dispatched",
    "intent_dropped",
    "intent_enqueued",
    "intent_released",
    "scope_discarded",
    "scope_entered",
    "scope_flushed",
]

scope_entered = Signal(
    "scope_entered",
    doc="""A scope became the current one (``Scope.enter()``).

    Keyword arguments: none. ``sender.parent`` is the scope it nests in, if any.
    """,
)

intent_enqueued = Signal(
    "intent_enqueued",
    doc="""An intent is being accepted into the sender's buffer.

    Keyword arguments: ``intent``.

    airlock's own receiver runs first: it calls ``on_enqueue`` of the intent's
    local policies (innermost first) and then of the scope's policy. If it, or any
    receiver, raises ``PolicyViolation``, the intent is not buffered and the error
    reaches the caller of ``enqueue()``; receivers after it are not called.
    """,
    passthrough=(PolicyViolation,),
)

intent_captured = Signal(
    "intent_captured",
    doc="""The sender took an intent from a descendant scope that flushed.

    Keyword arguments: ``intent``, ``child`` (the descendant that flushed). The
    intent now flushes or discards with the sender.
    """,
)

intent_dropped = Signal(
    "intent_dropped",
    doc="""A policy refused an intent when the sender flushed, or (for a
    ``DjangoScope``) its savepoint or transaction had rolled back by then.

    Keyword arguments: ``intent``, ``policy`` (the policy that refused it;
    ``airlock.integrations.django.TransactionRolledBack`` for a rollback).
    """,
)

intent_released = Signal(
    "intent_released",
    doc="""An intent is going out now: it passed every policy and its moment has come.

    Keyword arguments: ``intent``.

    For a plain scope that is during ``flush()``; for a Django scope it is after
    the transaction commits. Observers run first (a tracer can open a span here),
    then airlock's own receiver hands the intent to the scope's executor and sends
    ``intent_dispatched`` or ``dispatch_failed``.
    """,
)

intent_dispatched = Signal(
    "intent_dispatched",
    doc="""An executor accepted an intent: the task ran, or the queue took the message.

    Keyword arguments: ``intent``, ``result`` (whatever the executor returned,
    e.g. Celery's ``AsyncResult`` or Dramatiq's ``Message``).
    """,
)

dispatch_failed = Signal(
    "dispatch_failed",
    doc="""An executor raised while dispatching an intent.

    Keyword arguments: ``intent``, ``error`` (the exception).
    """,
)

scope_flushed = Signal(
    "scope_flushed",
    doc="""The sender has handed its intents on: dispatched them, or scheduled them.

    Keyword arguments: ``intents`` (the list ``flush()`` returns: the intents that
    passed every policy and were not captured by an ancestor). A scope that waits
    for a database commit sends this when it schedules; ``intent_dispatched``
    follows later, when each intent really goes out.
    """,
)

scope_discarded = Signal(
    "scope_discarded",
    doc="""The sender dropped its whole buffer.

    Keyword arguments: ``intents`` (what was dropped), ``error`` (the exception
    that caused the discard, or ``None`` when ``discard()`` was called directly).
    """,
)

ALL: tuple[Signal, ...] = (
    scope_entered,
    intent_enqueued,
    intent_captured,
    intent_dropped,
    intent_released,
    intent_dispatched,
    dispatch_failed,
    scope_flushed,
    scope_discarded,
)
"""Every airlock signal, in the order a scope's life visits them."""
