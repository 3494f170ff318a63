"""``DjangoScope``: intents leave only after the database transaction commits.

How it works, and why it registers at enqueue time rather than at flush:

Django discards the ``on_commit`` callbacks registered inside a savepoint when
that savepoint rolls back, and runs the others when the outermost ``atomic()``
commits. A scope usually ends *after* the ``atomic()`` blocks inside it, so a
callback registered at flush would no longer know which savepoint its intent
came from. So each intent gets a :class:`_CommitTicket` the moment it is
enqueued, and the ticket itself is the ``on_commit`` callback, registered inside
whatever savepoint is open at that moment. A ticket then learns one of three
things, whichever comes first:

- its transaction committed (Django called it) before the scope flushed: it
  waits, and the flush releases it at once;
- the scope flushed while the transaction is still open: it is released when
  Django calls it on commit;
- its savepoint or transaction rolled back: Django forgot the callback, which
  the flush sees (the ticket is neither called nor still registered). The flush
  then drops the intent as a policy would, before anything is planned, so it is
  reported on ``intent_dropped`` with :class:`TransactionRolledBack` and is not
  among the intents the flush returns.

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
from airlock.typing import Policy

__all__ = ["DjangoScope", "TransactionRolledBack"]

_log = logging.getLogger("airlock.integrations.django")

_WAITING = "waiting"  # registered, neither committed nor flushed yet
_COMMITTED = "committed"  # the transaction committed before the scope flushed, or none was open
_SCHEDULED = "scheduled"  # flushed; goes out when Django calls it on commit
_RELEASED = "released"


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


class _CommitTicket:
    """One intent's wait for its transaction, and Django's ``on_commit`` callback."""

    __slots__ = ("connection", "intent", "is_in_transaction", "scope", "state")

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.intent: Intent | None = None
        self.scope: DjangoScope | None = None
        self.state = _WAITING
        # Registered with on_commit: its release follows a real commit (for the log).
        self.is_in_transaction = False

    def __call__(self) -> None:
        if self.state is _SCHEDULED:
            self.release()
        elif self.state is _WAITING:
            self.state = _COMMITTED

    def release(self) -> None:
        """Send the intent now; a failure is logged (``dispatch_failed`` already fired)."""
        assert self.scope is not None and self.intent is not None
        self.state = _RELEASED
        try:
            self.scope._release_one(self.intent)
        except Exception:
            # Say "after commit" only when there was one: with no transaction open
            # (autocommit, a worker's task run) the intent went at the flush.
            moment = "after commit on" if self.is_in_transaction else "at flush, with no transaction open on"
            _log.exception(
                "airlock: %s failed to dispatch %s database %r; it was reported on airlock.signals.dispatch_failed",
                self.intent,
                moment,
                self.connection.alias,
            )

    def is_forgotten(self, registered: set[int]) -> bool:
        """True when Django dropped the callback: its (save)point rolled back."""
        return self.state is _WAITING and id(self) not in registered


def scheduled_intent(callback: object, *, released: bool = True) -> Intent | None:
    """The intent behind an ``on_commit`` callback, if it is a flushed airlock intent.

    With ``released=False``, only if it has not gone out yet.
    """
    if type(callback) is _CommitTicket and (callback.state is _SCHEDULED or (released and callback.state is _RELEASED)):
        return callback.intent
    return None


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
        self._tickets: dict[int, _CommitTicket] = {}
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
        # Register before the intent exists so a refused enqueue (PolicyViolation)
        # leaves only an empty ticket behind, which does nothing when called.
        ticket = self._register()
        intent = super()._enqueue(task, args, kwargs, name, origin, options)
        ticket.intent = intent
        self._tickets[id(intent)] = ticket
        return intent

    def _register(self) -> _CommitTicket:
        thread, connection = self._connection
        if thread != get_ident() or connection is None:
            connection = connections[self._using]
            self._connection = (get_ident(), connection)
        ticket = _CommitTicket(connection)
        # Only attributes are read here, never the database: this also runs on an
        # event loop (async views), where Django forbids connection I/O and where
        # no transaction can be open anyway.
        if connection.in_atomic_block or (connection.connection is not None and not connection.autocommit):
            # Inside atomic(): Django stores it with the open savepoints. Manual
            # transaction management: Django raises TransactionManagementError.
            connection.on_commit(ticket, robust=True)
            ticket.is_in_transaction = True
            self._judges = True  # it may roll back before the flush: see _judge
        else:
            ticket.state = _COMMITTED
        return ticket

    def _take(self, intents: list[Intent], child: Scope) -> None:
        # Captured intents keep the ticket (and so the transaction) they were born with.
        # Those from a plain Scope have none: tie them to the transaction open now, as
        # the child exits (usually still inside the atomic() block they were made in),
        # so a rollback of that block drops them too.
        tickets = getattr(child, "_tickets", None) or {}
        for intent in intents:
            ticket = tickets.pop(id(intent), None)
            if ticket is None:
                ticket = self._register()
                ticket.intent = intent
            self._tickets[id(intent)] = ticket
            if ticket.state is _WAITING:
                self._judges = True
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
        tickets = self._tickets
        registered: dict[int, tuple[set[int], TransactionRolledBack]] = {}
        kept: list[Intent] = []
        dropped: list[tuple[Intent, Policy]] = []
        for intent in intents:
            ticket = tickets.get(id(intent))
            if ticket is None or ticket.state is not _WAITING:
                kept.append(intent)
                continue
            connection = ticket.connection
            known = registered.get(id(connection))
            if known is None:
                callbacks = {id(entry[1]) for entry in connection.run_on_commit}
                known = registered[id(connection)] = (callbacks, TransactionRolledBack(connection.alias))
            if ticket.is_forgotten(known[0]):
                _log.info(
                    "airlock: %s dropped: its savepoint or transaction on database %r rolled back "
                    "before the scope flushed",
                    intent,
                    connection.alias,
                )
                dropped.append((intent, known[1]))
            else:
                kept.append(intent)
        return kept, dropped

    def schedule_dispatch(self, intents: list[Intent]) -> None:
        """Release committed intents now; the others when Django calls them on commit.

        The rolled-back ones were already dropped (see :meth:`_judge`).
        """
        tickets, self._tickets = self._tickets, {}
        now: list[_CommitTicket] = []
        for intent in intents:
            ticket = tickets.get(id(intent))
            if ticket is None:
                # Enqueued in a plain Scope and captured here: the transaction open
                # now is the best we know of.
                ticket = self._register()
                ticket.intent = intent
                if ticket.state is _WAITING:
                    ticket.state = _SCHEDULED
            ticket.scope = self
            if ticket.state is _SCHEDULED:
                continue
            if ticket.state is _COMMITTED:
                now.append(ticket)
            else:
                ticket.state = _SCHEDULED
        for ticket in now:
            ticket.release()

    def discard(self, error: BaseException | None = None) -> list[Intent]:
        self._tickets = {}
        return super().discard(error)
