"""``OutboxScope``: a ``DjangoScope`` whose intents are rows in the caller's transaction.

The life of one intent:

1. **Enqueue.** The arguments are encoded as JSON (an argument JSON cannot hold
   is refused here, naming it) and the task's registered name is found. Inside
   a transaction the row is ``pending``, on the scope's database, written with
   the transaction's other rows in one ``INSERT`` right before it commits
   (``_precommit``), so a rollback of the transaction (or of the savepoint
   around the enqueue) means the row never exists. Outside one there is
   nothing to tie the row to; it is written at the flush.
2. **Flush.** The scope decides. The rows of the intents that go become
   ``ready`` in one ``UPDATE`` (inside the transaction, if it is still open);
   the rows of those a policy refused or a rollback dropped, and of a discarded
   scope, are deleted. A ``ready`` row is delivered at least once, whatever
   happens to this process.
3. **Fast path.** Right after the commit (or at once, when the transaction has
   already committed) this process publishes its ready rows in order, over one
   connection per queue, and marks them ``sent`` in one ``UPDATE``. It stops at
   the first sign that the broker is unreachable, or at ``FAST_PATH_DEADLINE``;
   what is left stays ``ready`` for the relay. Nothing is raised to the request.

Each row names its writer, this process (``_writers``), which holds a lock on
the database for as long as it lives. A row still ``pending`` after its
transaction committed, whose writer's lock is gone, belongs to a process that
died before its scope decided: the relay delivers it (or, with ``UNDECIDED =
"hold"``, holds it for a person), within a second or two of the death. A row
that names no writer, or whose live writer leaves it undecided for
``HOLD_AFTER``, is held (see docs/reliability.md for the choice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from json import loads as _json_loads
from time import monotonic, time
from typing import Any
from uuid import uuid4

from django.db import connections  # type: ignore[import-untyped]  # Django ships no type hints

from airlock import Intent, Scope
from airlock._context import hooks
from airlock._propagation import inject
from airlock.integrations.django._after_response import after_response
from airlock.integrations.django._scope import DjangoScope
from airlock.integrations.django.outbox._background import Batch, hand_off, publish_batches, settle
from airlock.integrations.django.outbox._carriers import Carrier, carrier_for
from airlock.integrations.django.outbox._markline import line_for
from airlock.integrations.django.outbox._models import HELD, PENDING, READY
from airlock.integrations.django.outbox._options import outbox_options
from airlock.integrations.django.outbox._precommit import defer
from airlock.integrations.django.outbox._publish import Message, Outcome
from airlock.integrations.django.outbox._store import delete_undecided, encode, insert, set_state
from airlock.integrations.django.outbox._writers import written_by
from airlock.signals import dispatch_failed, intent_dispatched
from airlock.typing import Policy

__all__ = ["OutboxScope"]

_log = logging.getLogger("airlock.integrations.django.outbox")


class _Entry:
    """One intent's row, as the process that wrote it knows it."""

    __slots__ = ("carrier", "dropped", "intent_id", "message", "name", "payload", "written")

    def __init__(self, carrier: Carrier, name: str, payload: str, message: Message) -> None:
        self.carrier = carrier
        self.name = name
        self.payload = payload
        self.message = message
        self.intent_id = message.intent_id
        self.written = False  # its row is in the database (or in the open transaction)
        self.dropped = False  # its scope let it go: a row waiting for the commit must not be written

    def row(self, state: str, now: float, writer: str, available: float | None = None) -> tuple[Any, ...]:
        available = now if available is None else available
        return (self.intent_id, self.name, self.carrier.key, self.payload, state, now, available, writer)


class OutboxScope(DjangoScope):
    """A :class:`DjangoScope` that writes each intent to the outbox table in the caller's transaction.

    ``AIRLOCK = {"OUTBOX": True}`` makes it the default scope; use it directly
    (``airlock.scope(_cls=OutboxScope)``) to turn the outbox on for one scope,
    or pass ``outbox=False`` to turn it off for one. Everything a
    ``DjangoScope`` promises still holds; on top, a committed intent is
    delivered at least once even if the broker is down or the process dies.

    Args:
        policy: Which intents may go.
        executor: How they go: a queue executor (Celery, Dramatiq, Huey,
            django-q2) or one with a registered carrier.
        using: The database alias of the transaction, and of the outbox rows.
        outbox: ``False`` behaves exactly as a plain ``DjangoScope``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        policy: Policy | None = None,
        executor: Callable[[Intent], Any] | None = None,
        *,
        using: str | None = None,
        outbox: bool = True,
    ) -> None:
        super().__init__(policy, executor, using=using)
        self._outbox = outbox
        self._entries: dict[int, _Entry] = {}
        self._flushed: dict[int, _Entry] = {}
        self._collected: list[Intent] = []
        # Captured intents whose executor has no carrier (sync_executor): sent as a DjangoScope sends them.
        self._direct: set[int] = set()

    @property
    def outbox(self) -> bool:
        """Whether this scope's intents go through the outbox."""
        return self._outbox

    # -- enqueue ------------------------------------------------------------------

    def _enqueue(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        origin: Any,
        options: Mapping[str, Any] | None,
    ) -> Intent:
        if not self._outbox:
            return super()._enqueue(task, args, kwargs, name, origin, options)
        # Everything that can refuse runs before the intent exists: no receiver
        # sees an intent the outbox could not store.
        entry = _prepare(self._route, task, args, kwargs, options)
        intent = super()._enqueue(task, args, kwargs, name, origin, options)
        ticket = self._ticket  # the run of on_commit intents it just joined
        assert ticket is not None
        if ticket.hooks is not None:  # given to on_commit: a transaction is open
            # Written with the transaction's other rows, in one statement, as it commits.
            row = entry.row(PENDING, time(), written_by(ticket.connection))
            defer(ticket.connection, entry, ticket, row)
        self._entries[id(intent)] = entry
        return intent

    def _take(self, intents: list[Intent], child: Scope) -> None:
        entries = getattr(child, "_entries", None)
        if entries and self._outbox:
            for intent in intents:
                entry = entries.pop(id(intent), None)
                if entry is not None:
                    self._entries[id(intent)] = entry
        super()._take(intents, child)

    # -- flush and discard ------------------------------------------------------------

    def flush(self) -> list[Intent]:
        if not self._outbox:
            return super().flush()
        try:
            return super().flush()
        finally:
            if self.is_flushed:
                # What schedule_dispatch and the ancestors did not take was refused
                # by a policy or rolled back: its row must never go.
                self._forget(self._entries, "dropped at flush")

    def discard(self, error: BaseException | None = None) -> list[Intent]:
        if self._outbox:
            self._require_exited("discard")
            self._forget(self._entries, "discarded")
        return super().discard(error)

    def _forget(self, entries: dict[int, _Entry], why: str) -> None:
        self._entries = {}
        for entry in entries.values():
            entry.dropped = True
        written = [entry.intent_id for entry in entries.values() if entry.written]
        if written:
            delete_undecided(connections[self._using], written)
        if entries and self._parent is not None and not getattr(self._parent, "_outbox", False):
            _log.debug("airlock outbox: %d row(s) of %r %s", len(entries), self, why)

    def schedule_dispatch(self, intents: list[Intent]) -> None:
        """Mark the rows ready (writing those not written yet), then publish after the commit."""
        if not self._outbox:
            super().schedule_dispatch(intents)
            return
        entries = self._entries
        ready: list[str] = []
        unwritten: list[_Entry] = []
        for intent in intents:
            entry = entries.pop(id(intent), None)
            if entry is None:
                # Captured from a scope without the outbox: it gets its row now, unless
                # that scope chose an executor no carrier serves (sync_executor, which
                # runs in this process): a captured intent keeps its scope's executor,
                # so it goes after the commit as a DjangoScope sends it, without a row.
                route = (self._routes or {}).get(id(intent)) or self._route
                if not _has_carrier(route):
                    self._direct.add(id(intent))
                    continue
                entry = _prepare(route, intent.task, intent.args, intent.kwargs, intent.dispatch_options)
            self._flushed[id(intent)] = entry
            if entry.written:
                ready.append(entry.intent_id)
            else:
                unwritten.append(entry)
        connection = connections[self._using]
        now = time()
        options = outbox_options()
        # The writer publishes right after the commit: a relay leaves the rows to it
        # for FAST_PATH_DEADLINE (what the writer cannot publish, it hands back at once).
        available = now if options["FAST_PATH"] == "off" else now + options["FAST_PATH_DEADLINE"]
        if ready:
            # With a fast path, on PostgreSQL, the mark is sent without waiting for its
            # answer, which the next mark, the idle publisher or a release reads (_markline).
            lined = options["FAST_PATH"] != "off" and options["MARK_LINE"] and not connection.in_atomic_block
            line = line_for(connection) if lined else None
            set_state(
                connection, ready, READY, only_from=(PENDING, HELD), lazy_flush=True, line=line, available_at=available
            )
        if unwritten:
            writer = written_by(connection)
            insert(connection, [entry.row(READY, now, writer, available) for entry in unwritten])
            for entry in unwritten:
                entry.written = True
        # The tickets call _release_one: at once for a committed transaction, on
        # commit otherwise. One more callback, registered after every ticket,
        # publishes what they collected in one run.
        super().schedule_dispatch(intents)
        if self._collected:
            self._publish_collected()
        if self._flushed:
            connection.on_commit(self._publish_collected, robust=True)

    def _release_one(self, intent: Intent) -> None:
        if not self._outbox or id(intent) in self._direct:
            self._direct.discard(id(intent))
            super()._release_one(intent)
            return
        self._collected.append(intent)

    # -- the fast path ------------------------------------------------------------------

    def _publish_collected(self) -> None:
        collected, self._collected = self._collected, []
        if not collected:
            return
        entries = [self._flushed.pop(id(intent)) for intent in collected]
        options = outbox_options()
        mode = options["FAST_PATH"]
        override = hooks.executor_override
        # airlock.testing.capture() takes the committed rows whatever the fast path is:
        # with "off" too, a test's capture sees (and runs) what the outbox holds.
        if mode == "off" and override is None:
            return
        messages = [entry.message for entry in entries]
        for message, intent in zip(messages, collected, strict=True):
            message.ref = intent
        if override is not None:  # airlock.testing.capture(): record now, in this thread
            started = monotonic()
            outcome = _publish_through(self, override, messages)
            settle(self._using, outcome)
            self._report(self, outcome, started)
            return
        batch = Batch(self, self._using, messages)
        # While the fast path is paused, publish_batches hands the rows to the relay at once, here.
        if mode == "background" and monotonic() >= options.paused_until:
            # In a request, once its response is out: the publisher's work (which holds
            # the GIL) then does not compete with the rest of the request.
            if after_response(lambda: _hand_off_or_publish(batch)) or hand_off(batch, OutboxScope._report):
                return
        publish_batches([batch], OutboxScope._report)

    @staticmethod
    def _report(scope: Scope, outcome: Any, started: float) -> None:
        """Log what a fast-path run left for the relay (its signals were sent as it published)."""
        for message, error in outcome.failed:
            _log.warning("airlock outbox: %s failed to publish (%s); its row stays for the relay", message.ref, error)
        if outcome.untried:
            _log.warning(
                "airlock outbox: %d intent(s) left for the relay after %.3fs (%s), from %r",
                len(outcome.untried),
                monotonic() - started,
                outcome.unreachable or "fast-path deadline reached",
                scope,
            )


def _hand_off_or_publish(batch: Batch) -> None:
    if not hand_off(batch, OutboxScope._report):
        publish_batches([batch], OutboxScope._report)


def _publish_through(scope: Scope, executor: Callable[[Intent], Any], messages: list[Message]) -> Outcome:
    """``airlock.testing.capture`` (an executor override) records instead of publishing."""
    outcome = Outcome()
    for message in messages:
        try:
            result = executor(message.ref)
        except Exception as error:
            if dispatch_failed.receivers:
                dispatch_failed.emit(scope, intent=message.ref, error=error)
            outcome.failed.append((message, error))
        else:
            if intent_dispatched.receivers:
                intent_dispatched.emit(scope, intent=message.ref, result=result)
            outcome.sent.append((message, result))
    return outcome


def _has_carrier(executor: Callable[[Intent], Any]) -> bool:
    try:
        carrier_for(executor)
    except TypeError:
        return False
    return True


_last_name: tuple[Any, Carrier | None, str] = (object(), None, "")


def _prepare(
    executor: Callable[[Intent], Any],
    task: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: Mapping[str, Any] | None,
) -> _Entry:
    """Everything the row needs; raises ``TypeError`` naming what cannot be stored."""
    global _last_name
    carrier = carrier_for(executor)
    remembered_task, remembered_carrier, name = _last_name
    if remembered_task is not task or remembered_carrier is not carrier:
        name = carrier.name_of(task)
        _last_name = (task, carrier, name)
    stored_options = carrier.stored_options(task, options)
    # With tracing on, the enqueue's context goes into the row: a relay that sends it
    # later (after a crash or an outage) opens its send span in that trace.
    trace = inject({}) if hooks.capture_trace_context is not None else None
    payload = encode(name, args, kwargs, stored_options, trace)
    # The message carries the stored arguments, not the live ones: the fast path
    # and the relay send the same thing, whatever the caller mutates later.
    decoded = _json_loads(payload)
    message = Message(uuid4().hex, carrier, task, decoded[0], decoded[1], decoded[2])
    return _Entry(carrier, name, payload, message)
