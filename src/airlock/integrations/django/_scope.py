"""``DjangoScope``: intents leave only after the database transaction commits.

How it works, and why it registers at enqueue time rather than at flush:

Django discards the ``on_commit`` callbacks registered inside a savepoint when
that savepoint rolls back, and runs the others when the outermost ``atomic()``
commits. A scope usually ends *after* the ``atomic()`` blocks inside it, so a
callback registered at flush would no longer know which savepoint its intent
came from. So each intent is tied to a :class:`_CommitTicket` the moment it
is enqueued, and the ticket itself is the ``on_commit`` callback, registered
inside whatever savepoint is open at that moment. One ticket serves a whole run
of intents: the scope reuses it while the same thread, transaction and
savepoints are open, and makes a new one when that changes, so Django holds one
callback per savepoint rather than one per intent (it pops its callbacks off
the front of a list: a callback per intent made a commit quadratic). A ticket
then learns one of three things, whichever comes first:

- its transaction committed (Django called it) before the scope flushed: it
  waits, and the flush releases its intents at once;
- the scope flushed while the transaction is still open: its intents are
  released when Django calls it on commit;
- its savepoint or transaction rolled back: Django forgot the callback, which
  the flush sees (the ticket is neither called nor still registered). The flush
  then drops its intents as a policy would, before anything is planned, so they
  are reported on ``intent_dropped`` with :class:`TransactionRolledBack` and are
  not among the intents the flush returns.

A rollback *after* the flush (the ticket is scheduled) cannot be reported:
Django has no rollback hook, and simply never calls the ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from threading import get_ident
from typing import Any, final

from django.db import connections, router  # type: ignore[import-untyped]  # Django ships no type hints
from django.db.backends.base.base import BaseDatabaseWrapper  # type: ignore[import-untyped]

from airlock import Intent, Scope
from airlock._context import flush_window
from airlock.typing import Policy

__all__ = ["DjangoScope", "TransactionRolledBack"]

_log = logging.getLogger("airlock.integrations.django")


@final
class TransactionRolledBack:
    """Why a ``DjangoScope`` dropped an intent: its savepoint or transaction rolled back.

    It is not a policy you set on a scope. A ``DjangoScope`` gives it as the
    ``policy`` of :data:`airlock.signals.intent_dropped` when, at flush, an
    intent's transaction (or the savepoint around its enqueue) has already
    rolled back, so observers see why the intent never went, under the name
    ``TransactionRolledBack``. Like any policy it has ``on_enqueue`` and
    ``allows``; ``allows`` is always ``False``.

    Args:
        using: The database alias whose transaction rolled back.

    .. versionadded:: 0.1
    """

    __slots__ = ("using",)

    def __init__(self, using: str) -> None:
        self.using = using

    def on_enqueue(self, intent: Intent) -> None:
        """Accept every intent: the rollback is only known later."""

    def allows(self, intent: Intent) -> bool:
        """Never: the data the intent was about was rolled back."""
        return False

    def __repr__(self) -> str:
        return f"TransactionRolledBack(using={self.using!r})"


@final
class _CommitTicket:
    """Django's ``on_commit`` callback for a run of one scope's intents.

    A run is what one scope enqueued, one after the other, in one thread, while
    the same transaction and the same savepoints were open: the intents Django
    would have kept or forgotten together had each been a callback of its own.
    One callback per run keeps a commit linear (Django pops its callbacks off the
    front of a list) and a savepoint rollback exact.

    A ticket made in autocommit has nothing to wait for: it is never registered
    and counts as committed. ``parts`` are the intents flushed through it, each
    with the scope that sends them (one scope may hand part of a run to an
    ancestor); ``done`` counts the parts sent.
    """

    __slots__ = ("connection", "done", "hooks", "intents", "is_called", "parts", "savepoints", "thread")

    def __init__(self, connection: BaseDatabaseWrapper, thread: int) -> None:
        self.connection = connection
        self.thread = thread
        # Django's run_on_commit list this ticket was appended to; None in autocommit.
        # Django replaces that list on commit, rollback and savepoint rollback, so
        # while it is the same list object the ticket is still registered.
        self.hooks: list[Any] | None = None
        self.savepoints: list[str | None] = []
        self.intents: list[Intent] = []
        self.is_called = True
        self.parts: list[tuple[DjangoScope, list[Intent]]] = []
        self.done = 0

    def is_open(self) -> bool:
        """True while an intent enqueued now belongs to this run."""
        if self.thread != get_ident():
            return False
        connection = self.connection
        if self.hooks is None:
            return not connection.in_atomic_block and (connection.connection is None or connection.autocommit)
        return (
            connection.run_on_commit is self.hooks
            and not self.is_called  # TestCase.captureOnCommitCallbacks(execute=True) calls without committing
            and connection.in_atomic_block
            and connection.savepoint_ids == self.savepoints
        )

    def __call__(self) -> None:
        self.is_called = True
        self.release()

    def release(self) -> None:
        """Send the flushed intents not sent yet, in order; a failure is logged (``dispatch_failed`` already fired)."""
        # Say "after commit" only when there was one: with no transaction open
        # (autocommit, a worker's task run) the intents went at the flush.
        moment = "at flush, with no transaction open on" if self.hooks is None else "after commit on"
        parts = self.parts
        window = flush_window.set({})  # one broker failure fails the rest of this release fast
        try:
            while self.done < len(parts):
                scope, intents = parts[self.done]
                self.done += 1
                send = scope._release_one
                for intent in intents:
                    try:
                        send(intent)
                    except Exception:  # the others still go
                        _log.exception(
                            "airlock: %s failed to dispatch %s database %r; "
                            "it was reported on airlock.signals.dispatch_failed",
                            intent,
                            moment,
                            self.connection.alias,
                        )
        finally:
            flush_window.reset(window)


def scheduled_intents(callback: object, *, released: bool = True) -> list[Intent]:
    """The intents behind an ``on_commit`` callback, if it is a ``DjangoScope``'s, in order.

    Only those flushed; with ``released=False``, only those not gone out yet.
    """
    if type(callback) is not _CommitTicket:
        return []
    parts = callback.parts if released else callback.parts[callback.done :]
    return [intent for _, intents in parts for intent in intents]


class DjangoScope(Scope):
    """A scope whose intents go out only after their database transaction commits.

    Each intent is tied to the transaction open on the scope's database when it
    is enqueued. Intents from an inner ``atomic()`` block that rolls back are
    dropped; when the block is released they go with the outer commit; a
    rollback of the whole transaction dispatches nothing. With no transaction
    open (autocommit), there is nothing to wait for and intents go at flush, as
    with a plain :class:`~airlock.Scope`.

    Dispatch is robust: a failing executor is reported on
    ``airlock.signals.dispatch_failed`` and logged on the
    ``airlock.integrations.django`` logger, the other intents still go, and
    nothing is raised to the code that committed or flushed.

    Args:
        policy: Which intents may go (default ``AllowAll``).
        executor: How they go (default the sync executor).
        using: The database alias whose commits release the intents. ``None``
            asks Django's routers (``router.db_for_write`` with no model), which
            gives ``"default"`` unless a router says otherwise.

    Raises:
        ValueError: ``using`` names no database in ``settings.DATABASES``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        policy: Policy | None = None,
        executor: Callable[[Intent], Any] | None = None,
        *,
        using: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__(policy, executor, **unknown)
        if using is None:
            using = router.db_for_write(None)
        if using not in connections.settings:
            raise ValueError(
                f"DjangoScope(using={using!r}): no such database; "
                f"settings.DATABASES has {', '.join(map(repr, connections.settings))}"
            )
        self._using: str = using
        # One ticket per run of intents (see _CommitTicket), in the order they were
        # made; _ticket is the newest one of this scope's own, or None after a
        # capture (later intents then make a new run, behind the captured ones).
        self._tickets: list[_CommitTicket] = []
        self._ticket: _CommitTicket | None = None
        # The core runs _judge at flush only when _judges is set (a policy that may
        # refuse). A rollback may refuse too, so _register and _take set _judges once
        # a ticket waits on a transaction; autocommit flushes skip the look-up.
        # _policy_judges remembers whether the policy itself has a say.
        self._policy_judges = self._judges
        # Django's connections are per thread; remember the last thread's, since
        # looking one up costs more than the rest of an enqueue. One tuple, read
        # and replaced whole, so two threads enqueueing at once cannot mix them up.
        self._connection: tuple[int, BaseDatabaseWrapper | None] = (0, None)

    @property
    def using(self) -> str:
        """The database alias whose commits release this scope's intents."""
        return self._using

    def _enqueue(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        origin: Any,
        options: Mapping[str, Any] | None,
    ) -> Intent:
        # The ticket first: under manual transaction management Django refuses
        # on_commit, and then nothing may be buffered. A refused enqueue
        # (PolicyViolation) at worst leaves an empty ticket, which sends nothing.
        ticket = self._ticket
        if ticket is None or not ticket.is_open():
            ticket = self._open_ticket()
        intent = super()._enqueue(task, args, kwargs, name, origin, options)
        ticket.intents.append(intent)
        return intent

    def _open_ticket(self) -> _CommitTicket:
        """The ticket for intents enqueued now: a new one, unless only a savepoint rollback moved."""
        thread = get_ident()
        known, connection = self._connection
        if known != thread or connection is None:
            connection = connections[self._using]
            self._connection = (thread, connection)
        # Only attributes are read here, never the database: this also runs on an
        # event loop (async views), where Django forbids connection I/O and where
        # no transaction can be open anyway.
        last = self._ticket
        if (
            last is not None
            and last.connection is connection
            and last.thread == thread
            and not last.is_called
            and connection.in_atomic_block
            and connection.savepoint_ids == last.savepoints
            and any(entry[1] is last for entry in connection.run_on_commit)
        ):
            # Another savepoint rolled back and Django rebuilt its list without
            # dropping this ticket: same transaction, same savepoints, keep it.
            last.hooks = connection.run_on_commit
            return last
        ticket = _CommitTicket(connection, thread)
        if connection.in_atomic_block or (connection.connection is not None and not connection.autocommit):
            # Inside atomic(): Django stores it with the open savepoints. Manual
            # transaction management: Django raises TransactionManagementError.
            connection.on_commit(ticket, robust=True)
            ticket.hooks = connection.run_on_commit
            ticket.savepoints = list(connection.savepoint_ids)
            ticket.is_called = False
            self._judges = True  # it may roll back before the flush: see _judge
        self._ticket = ticket
        self._tickets.append(ticket)
        return ticket

    def _take(self, intents: list[Intent], child: Scope) -> None:
        # Captured intents keep the ticket (and so the transaction) they were born
        # with: the parent takes the child's tickets, and sends, of each, only the
        # intents it holds. Those from a plain Scope have none: tie them to the
        # transaction open now, as the child exits (usually still inside the
        # atomic() block they were made in), so a rollback of that block drops them.
        if isinstance(child, DjangoScope):
            theirs = child._tickets
            self._tickets.extend(theirs)
            self._ticket = None  # what this scope enqueues next goes after them
            if not all(ticket.is_called for ticket in theirs):
                self._judges = True
        else:
            ticket = self._ticket
            if ticket is None or not ticket.is_open():
                ticket = self._open_ticket()
            ticket.intents.extend(intents)
        super()._take(intents, child)

    def _judge(self, intents: list[Intent]) -> tuple[list[Intent], list[tuple[Intent, Policy]]]:
        # Rolled back first: no policy is asked about an intent that cannot go.
        kept, dropped = self._drop_rolled_back(intents)
        if self._policy_judges or self._has_local_policies:
            # With AllowAll and only local policies, the core also asks AllowAll,
            # which says yes: harmless.
            kept, refused = super()._judge(kept)
            if dropped and refused:
                # Report in enqueue order, as the core does.
                position = {id(intent): n for n, intent in enumerate(intents)}
                dropped = sorted(dropped + refused, key=lambda pair: position[id(pair[0])])
            else:
                dropped = dropped or refused
        return kept, dropped

    def _drop_rolled_back(self, intents: list[Intent]) -> tuple[list[Intent], list[tuple[Intent, Policy]]]:
        """Split off the intents whose savepoint or transaction Django rolled back."""
        registered: dict[int, set[int]] = {}
        forgotten: list[_CommitTicket] = []
        for ticket in self._tickets:
            if ticket.is_called:
                continue
            connection = ticket.connection
            hooks = connection.run_on_commit
            if hooks is ticket.hooks:
                continue  # Django has not rebuilt its list since: still registered
            known = registered.get(id(connection))
            if known is None:
                known = registered[id(connection)] = {id(entry[1]) for entry in hooks}
            if id(ticket) not in known:
                forgotten.append(ticket)
        if not forgotten:
            return intents, []
        gone = {id(ticket) for ticket in forgotten}
        self._tickets = [ticket for ticket in self._tickets if id(ticket) not in gone]
        reasons = {id(ticket.connection): TransactionRolledBack(ticket.connection.alias) for ticket in forgotten}
        why = {id(intent): reasons[id(ticket.connection)] for ticket in forgotten for intent in ticket.intents}
        kept: list[Intent] = []
        dropped: list[tuple[Intent, Policy]] = []
        for intent in intents:
            reason = why.get(id(intent))
            if reason is None:
                kept.append(intent)
                continue
            _log.info(
                "airlock: %s dropped: its savepoint or transaction on database %r rolled back before the scope flushed",
                intent,
                reason.using,
            )
            dropped.append((intent, reason))
        return kept, dropped

    def schedule_dispatch(self, intents: list[Intent]) -> None:
        """Release committed intents now; the others when Django calls them on commit.

        The rolled-back ones were already dropped (see :meth:`_judge`).
        """
        tickets, self._tickets, self._ticket = self._tickets, [], None
        parts: list[tuple[_CommitTicket, list[Intent]]]
        if sum(len(ticket.intents) for ticket in tickets) == len(intents):
            # Every intent of every ticket is here (no policy refused one, none was
            # handed up): each ticket sends all of its own.
            parts = [(ticket, ticket.intents) for ticket in tickets if ticket.intents]
        else:
            held = {id(intent) for intent in intents}
            parts = [(ticket, [intent for intent in ticket.intents if id(intent) in held]) for ticket in tickets]
        for ticket, part in parts:
            if part:
                ticket.parts.append((self, part))
                if ticket.is_called:  # committed already (or autocommit): send now
                    ticket.release()

    def discard(self, error: BaseException | None = None) -> list[Intent]:
        self._tickets, self._ticket = [], None
        return super().discard(error)
