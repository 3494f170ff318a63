"""``Scope``: the buffer that decides when, and whether, intents leave the process."""

from __future__ import annotations

import difflib
import inspect
import itertools
import logging
from collections.abc import Callable, Mapping
from operator import attrgetter
from time import time_ns
from types import TracebackType
from typing import Any

from airlock import _context
from airlock._errors import ScopeStateError, dispatch_error
from airlock._executors import sync_executor
from airlock._intent import _PROCESS, Intent, _Meta
from airlock._policies import (
    AllowAll,
    AssertNoEffects,
    BlockTasks,
    DropAll,
    LogOnFlush,
    checks_on_enqueue,
    is_allow_all,
)
from airlock.signals import (
    dispatch_failed,
    intent_captured,
    intent_dispatched,
    intent_dropped,
    intent_enqueued,
    intent_released,
    scope_discarded,
    scope_entered,
    scope_flushed,
)
from airlock.typing import Policy

__all__ = ["Scope"]

_CREATED = "created"
_ACTIVE = "active"
_EXITED = "exited"
_FLUSHED = "flushed"
_DISCARDED = "discarded"

_ALLOW_ALL = AllowAll()
_log = logging.getLogger("airlock")
_scope_numbers = itertools.count(1)
_alloc = object.__new__
_by_stamp = attrgetter("_stamp")
_current = _context.current
_local_policies = _context.local_policies
_hooks = _context.hooks
_flush_window = _context.flush_window


class Scope:
    """A unit of work's buffer of intents, and the rules for letting them out.

    Its life: ``enter()`` makes it current, domain code enqueues, ``exit()``
    restores the previous scope, then exactly one of ``flush()`` (dispatch what the
    policies allow) or ``discard()`` (drop everything). ``with`` and ``async with``
    do all of that, flushing on a normal exit and discarding on an exception
    (see :meth:`should_flush`).

    Args:
        policy: Decides which intents may go (default :class:`AllowAll`).
        executor: Sends each intent (default the sync executor, which calls it).
        dispatch_errors: ``"raise"``: when executors fail, the flush tries every
            intent, then raises one :class:`~airlock.DispatchError` listing the
            failures. ``"report"``: the failures are only reported (on
            ``dispatch_failed`` and the ``airlock`` logger).

    Subclass hooks: :meth:`should_flush`, :meth:`before_descendant_flushes` and
    :meth:`schedule_dispatch`.

    .. versionadded:: 0.1
    """

    # Defaults read from the class until a scope sets its own: fewer stores per scope.
    _parent: Scope | None = None
    _token: Any = None
    _routes: dict[int, Callable[[Intent], Any]] | None = None
    _captured: list[Intent] | None = None  # made by the first capture
    # len(buffer) when flush or discard took its snapshot; an enqueue that lands
    # after it lost a race with the exit (see _late).
    _sealed: int | None = None
    _reports_only = False
    _has_local_policies = False

    def __init__(
        self,
        policy: Policy | None = None,
        executor: Callable[[Intent], Any] | None = None,
        *,
        dispatch_errors: str = "raise",
        **unknown: Any,
    ) -> None:
        if unknown:
            raise TypeError(unknown_keywords(f"{type(self).__name__}()", unknown, _init_parameters(type(self))))
        if policy is None:
            # The default policy judges nothing: no need to ask it below.
            self._policy: Policy = _ALLOW_ALL
            self._judges = self._gates = False
        else:
            _check_policy(policy, "Scope(policy=...)")
            self._policy = policy
            self._judges = not is_allow_all(policy)
            self._gates = checks_on_enqueue(policy)
        # How this scope's own intents go: its executor when one was chosen, else
        # (see enter) the enclosing scope's way. _routes holds the captured intents
        # that go another way than _route, by id; None while there are none.
        if executor is None:
            self._executor: Callable[[Intent], Any] = sync_executor
            self._route: Callable[[Intent], Any] = sync_executor
            self._is_chosen = False
            self._check: Callable[[Intent], Intent | None] | None = None
        elif callable(executor):
            self._executor = self._route = executor
            self._is_chosen = True
            self._check = getattr(executor, "check_enqueue", None)
        else:
            raise TypeError(
                f"Scope(executor=...) must be callable with one Intent, got {executor!r}; "
                "pass e.g. airlock.integrations.executors.celery.celery_executor"
            )
        self._number = next(_scope_numbers)
        self._state = _CREATED
        self._buffer: list[Intent] = []
        if dispatch_errors != "raise":
            self._reports_only = check_dispatch_errors(dispatch_errors, "Scope(dispatch_errors=...)") == "report"

    # -- introspection --------------------------------------------------------

    @property
    def id(self) -> str:
        """A stable id, unique across processes, for logs and traces."""
        # Made on first use (observers ask once per intent), not for every scope.
        try:
            return self._id
        except AttributeError:
            self._id: str = f"{_PROCESS}-{self._number}"
            return self._id

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def executor(self) -> Callable[[Intent], Any]:
        return self._executor

    def executor_for(self, intent: Intent) -> Callable[[Intent], Any]:
        """The executor that will send ``intent``, one of this scope's buffered intents.

        The scope an intent was enqueued in decides how it goes: its own executor
        when one was chosen for it (``scope(executor=...)``), else the one its
        enclosing scope would use. A captured intent keeps that choice, whichever
        ancestor finally flushes it. A test override (``airlock.testing``) wins.

        .. versionadded:: 0.1
        """
        override = _hooks.executor_override
        if override is not None:
            return override
        routes = self._routes
        if routes:
            route = routes.get(id(intent))
            if route is not None:
                return route
        return self._route

    @property
    def parent(self) -> Scope | None:
        """The scope that was current when this one was entered."""
        return self._parent

    @property
    def state(self) -> str:
        """One of ``created``, ``active``, ``exited``, ``flushed``, ``discarded``."""
        return self._state

    @property
    def is_active(self) -> bool:
        return self._state is _ACTIVE

    @property
    def is_flushed(self) -> bool:
        return self._state is _FLUSHED

    @property
    def is_discarded(self) -> bool:
        return self._state is _DISCARDED

    @property
    def intents(self) -> list[Intent]:
        """Everything buffered, own and captured, in enqueue order (a copy)."""
        return list(self._buffer)

    @property
    def captured_intents(self) -> list[Intent]:
        """Intents taken from descendant scopes that flushed (a copy)."""
        return list(self._captured or ())

    @property
    def own_intents(self) -> list[Intent]:
        """Intents enqueued while this scope was the current one (a copy)."""
        captured = {id(intent) for intent in self._captured or ()}
        return [intent for intent in self._buffer if id(intent) not in captured]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self._state}, {len(self._buffer)} intents>"

    # -- life -------------------------------------------------------------------

    def enter(self) -> Scope:
        """Make this scope the current one, remembering the one it replaces."""
        if self._state is not _CREATED:
            raise ScopeStateError(
                f"cannot enter {self!r}: a scope is entered once, and it {_STATE_PHRASES[self._state]}. "
                "Create a new scope for a new unit of work."
            )
        parent = _current.get()
        if type(parent) is _context.PolicyGuard:
            parent = parent.scope
        self._parent = parent
        if parent is not None and not self._is_chosen:
            # No executor of its own: its intents go the way the enclosing scope's do.
            self._route = parent._route
            self._check = parent._check
        self._token = _current.set(self)
        self._state = _ACTIVE
        if scope_entered.receivers:
            scope_entered.emit(self)
        return self

    def exit(self) -> None:
        """Stop being the current scope and restore the previous one."""
        if self._state is not _ACTIVE:
            raise ScopeStateError(
                f"cannot exit {self!r}: it is not active (it {_STATE_PHRASES[self._state]}); "
                "only an entered scope can exit"
            )
        if _current.get() is not self:
            raise ScopeStateError(
                f"cannot exit {self!r}: it is not the current scope ({_current.get()!r} is); exit inner scopes first"
            )
        try:
            _current.reset(self._token)
        except ValueError:
            # Entered in another contextvars.Context (e.g. an async generator):
            # the token is foreign here, so restore the parent by value.
            _current.set(self._parent)
        self._token = None
        self._state = _EXITED

    def should_flush(self, error: BaseException | None) -> bool:
        """Decide, at the end of a ``with`` block, whether to flush (else discard).

        Args:
            error: The exception leaving the block, or ``None``.

        Returns:
            ``True`` to flush. The default flushes only when there is no error.
        """
        return error is None

    def before_descendant_flushes(self, exiting_scope: Scope, intents: list[Intent]) -> list[Intent]:
        """Choose which of a flushing descendant's intents may go out now.

        The rest are captured into this scope and share its fate. The default
        keeps them all, so the outermost scope has the final word.

        Args:
            exiting_scope: The descendant that is flushing.
            intents: Its intents that passed its policies, in enqueue order.

        Returns:
            A list holding the intents that may go now (a subset of ``intents``).
        """
        return []

    def schedule_dispatch(self, intents: list[Intent]) -> None:
        """Decide *when* flushed intents go out. The default: right now, in order.

        Override to defer; call :meth:`_release` (or :meth:`_release_one` per
        intent) when the moment comes. ``DjangoScope`` waits for the commit.
        """
        self._release(intents)

    # -- enqueue ----------------------------------------------------------------

    def _enqueue(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        origin: Any,
        options: Mapping[str, Any] | None,
    ) -> Intent:
        if self._state is not _ACTIVE:
            raise ScopeStateError(
                f"cannot enqueue into {self!r}: it is not active (it {_STATE_PHRASES[self._state]}), "
                "so the intent could never be flushed. Enqueue inside an active scope."
            )
        local = _local_policies.get()
        capture = _hooks.capture_trace_context
        if name is None and origin is None and options is None and not local:
            # Nothing to check; with tracing on, only the trace context to keep.
            meta = None if capture is None else _Meta(None, None, None, (), capture())
        else:
            meta = _make_meta(name, origin, options, local, capture)
            if local:
                self._has_local_policies = True
        # Intent's constructor validates; enqueue() already did, so fill the slots directly.
        intent = _alloc(Intent)
        intent._task = task
        intent._args = args
        intent._kwargs = kwargs
        intent._meta = meta
        intent._stamp = time_ns()
        check = self._check
        if check is not None:
            # The executor's own look at the intent, while the caller's transaction is open.
            intent = check(intent) or intent
        # Nobody to ask and nobody listening: skip building the event at all.
        if local or self._gates or intent_enqueued.receivers:
            intent_enqueued.emit_intent(self, intent)
        self._buffer.append(intent)
        if self._state is not _ACTIVE:
            self._late(intent)
        return intent

    def _late(self, intent: Intent) -> None:
        """An enqueue from another thread met the scope's exit: in the flush, or refused."""
        sealed = self._sealed
        if sealed is None:
            return  # exited, not flushed or discarded yet: the coming one takes it
        buffer = self._buffer
        position = next(n for n in range(len(buffer) - 1, -1, -1) if buffer[n] is intent)
        if position < sealed:
            return  # appended before the snapshot: it is part of the flush (or discard)
        del buffer[position]
        raise ScopeStateError(
            f"cannot enqueue into {self!r}: it {_STATE_PHRASES[self._state]} while {intent} was "
            "being enqueued (from another thread), so the intent was not buffered and will not "
            "be sent. Enqueue before the scope's with-block ends."
        )

    # -- flush and discard ---------------------------------------------------------

    def flush(self) -> list[Intent]:
        """Dispatch (or hand to ancestors) what the policies allow.

        Returns:
            The intents handed to the executor (or scheduled for it), in enqueue
            order. Intents captured by an ancestor are not among them.

        Raises:
            ScopeStateError: The scope is not exited, or already flushed or discarded.
            TypeError: An ancestor's ``before_descendant_flushes`` returned a non-list.
        """
        self._require_exited("flush")
        buffer = self._buffer
        # _seal(), inlined: a call here costs every scope about 2% (callgrind, empty scope).
        sealed = self._sealed = len(buffer)  # see _late
        buffer = buffer[:sealed]
        dropped: list[tuple[Intent, Policy]] = []
        kept = buffer
        try:
            if self._judges or self._has_local_policies:
                kept, dropped = self._judge(buffer)
            plan, survivors = self._plan_capture(kept)
        except BaseException as error:
            # A policy or an ancestor's hook failed: nothing can be decided, so the
            # scope is discarded (and says so) rather than left holding its intents.
            self._state = _DISCARDED
            if scope_discarded.receivers:
                scope_discarded.emit(self, intents=list(buffer), error=error)
            add_note(error, f"airlock: {self!r} was discarded because its flush failed")
            raise
        # Everything that can fail has run; from here on the flush happens. The
        # buffers stay readable (tests read `s.intents` after the with-block).
        self._state = _FLUSHED
        if dropped and intent_dropped.receivers:
            for intent, policy in dropped:
                intent_dropped.emit(self, intent=intent, policy=policy)
        for ancestor, taken in plan:
            ancestor._take(taken, self)
        try:
            if survivors:
                self.schedule_dispatch(survivors)
        finally:
            if scope_flushed.receivers:
                scope_flushed.emit(self, intents=survivors)
        return survivors

    def discard(self, error: BaseException | None = None) -> list[Intent]:
        """Drop every buffered intent, own and captured.

        Args:
            error: The exception that caused the discard, passed on to receivers.

        Returns:
            The dropped intents, in enqueue order.
        """
        self._require_exited("discard")
        dropped = self._seal()
        self._state = _DISCARDED
        if scope_discarded.receivers:
            scope_discarded.emit(self, intents=dropped, error=error)
        return dropped

    def _seal(self) -> list[Intent]:
        """The buffer as flush or discard decides about it; later enqueues are late."""
        buffer = self._buffer
        sealed = self._sealed = len(buffer)
        return buffer[:sealed]

    def _require_exited(self, step: str) -> None:
        # A scope that was never entered holds nothing; flushing or discarding it
        # only settles its state (as airlock-py allows).
        if self._state is _EXITED or self._state is _CREATED:
            return
        advice = {
            _ACTIVE: "it is still active: call exit() first (or let its with-block end)",
            _FLUSHED: "it has already been flushed, and a scope flushes or discards once",
            _DISCARDED: "it has already been discarded, and a scope flushes or discards once",
        }[self._state]
        raise ScopeStateError(f"cannot {step} {self!r}: {advice}")

    def _judge(self, intents: list[Intent]) -> tuple[list[Intent], list[tuple[Intent, Policy]]]:
        kept: list[Intent] = []
        dropped: list[tuple[Intent, Policy]] = []
        policy = self._policy
        judges = self._judges
        token = _current.set(_context.PolicyGuard(self))
        try:
            for intent in intents:
                refuser = None
                for local in intent.local_policies:
                    if not local.allows(intent):
                        refuser = local
                        break
                if refuser is None and judges and not policy.allows(intent):
                    refuser = policy
                if refuser is None:
                    kept.append(intent)
                else:
                    dropped.append((intent, refuser))
        finally:
            _current.reset(token)
        return kept, dropped

    def _plan_capture(self, intents: list[Intent]) -> tuple[list[tuple[Scope, list[Intent]]], list[Intent]]:
        """Ask each active ancestor, nearest first, which intents may go now."""
        plan: list[tuple[Scope, list[Intent]]] = []
        pending = intents
        ancestor = self._parent
        while pending and ancestor is not None:
            if ancestor._state is _ACTIVE:
                allowed = ancestor.before_descendant_flushes(self, list(pending))
                if type(allowed) is not list:
                    raise TypeError(
                        f"{type(ancestor).__name__}.before_descendant_flushes() must return a "
                        f"list of the intents that may go now, got {type(allowed).__name__}; "
                        f"return [] to capture them all. {self!r} was not flushed."
                    )
                if allowed:
                    chosen = {id(intent) for intent in allowed}
                    offered = {id(intent) for intent in pending}
                    if not chosen <= offered:
                        raise ValueError(
                            f"{type(ancestor).__name__}.before_descendant_flushes() returned "
                            "intents it was not offered; return a subset of `intents`. "
                            f"{self!r} was not flushed."
                        )
                    taken = [intent for intent in pending if id(intent) not in chosen]
                    allowed = [intent for intent in pending if id(intent) in chosen]
                else:
                    taken = pending
                if taken:
                    plan.append((ancestor, taken))
                pending = allowed
            ancestor = ancestor._parent
        return plan, pending

    def _take(self, intents: list[Intent], child: Scope) -> None:
        route, routes = child._route, child._routes
        if route is not self._route or routes:
            self._keep_routes(intents, route, routes)
        buffer = self._buffer
        late = bool(buffer) and _by_stamp(intents[0]) < _by_stamp(buffer[-1])
        buffer.extend(intents)
        if late:
            buffer.sort(key=_by_stamp)  # stable: equal stamps keep arrival order
        if self._captured is None:
            self._captured = []
        self._captured.extend(intents)
        if intent_captured.receivers:
            for intent in intents:
                intent_captured.emit(self, intent=intent, child=child)

    def _keep_routes(
        self,
        intents: list[Intent],
        route: Callable[[Intent], Any],
        routes: dict[int, Callable[[Intent], Any]] | None,
    ) -> None:
        """Remember how captured intents go, where that differs from this scope's way."""
        mine = self._routes
        if mine is None:
            mine = self._routes = {}
        for intent in intents:
            way = routes.get(id(intent), route) if routes else route
            if way is not self._route:
                mine[id(intent)] = way

    # -- dispatch -------------------------------------------------------------------

    def _release_one(self, intent: Intent) -> None:
        """Send one intent out now (for :meth:`schedule_dispatch` overrides).

        Raises the executor's exception after reporting it on ``dispatch_failed``.
        """
        intent_released.emit_intent(self, intent)

    def _release(self, intents: list[Intent]) -> None:
        """Send intents out now, in order, every one of them whatever fails.

        Each failure is reported on ``dispatch_failed``; then one
        :class:`~airlock.DispatchError` lists them all (or, for a scope in report
        mode, they are logged). An interrupt (a ``BaseException`` such as
        ``KeyboardInterrupt``) stops the loop: the intents it left untried are
        reported on ``dispatch_failed`` with it, and it propagates.
        """
        failures: list[tuple[Intent, BaseException]] = []
        window = _flush_window.set({})  # a broker that fails fails the rest of this flush fast
        try:
            self._release_all(intents, failures)
        finally:
            _flush_window.reset(window)
        if failures:
            self._fail(failures)

    def _release_all(self, intents: list[Intent], failures: list[tuple[Intent, BaseException]]) -> None:
        if (
            intent_released.receivers
            or dispatch_failed.receivers
            or intent_dispatched.receivers
            or self._routes
            or _hooks.executor_override is not None
        ):
            self._release_observed(intents, failures)
        else:
            # Nobody listening and one executor for all: call it straight, which
            # is what the events would have done, without building them.
            executor = self._route
            intent = None
            try:
                for intent in intents:
                    try:
                        executor(intent)
                    except Exception as error:
                        failures.append((intent, error))
            except BaseException as interrupt:
                self._interrupted(intents, intent, interrupt, failures, sent=False)
                raise

    def _release_observed(self, intents: list[Intent], failures: list[tuple[Intent, BaseException]]) -> None:
        release = intent_released.emit_intent
        intent = None
        self._last_sent: Intent | None = None
        try:
            for intent in intents:
                try:
                    release(self, intent)
                except Exception as error:
                    failures.append((intent, error))
        except BaseException as interrupt:
            self._interrupted(intents, intent, interrupt, failures, sent=self._last_sent is intent)
            raise

    def _interrupted(
        self,
        intents: list[Intent],
        current: Intent | None,
        interrupt: BaseException,
        failures: list[tuple[Intent, BaseException]],
        *,
        sent: bool,
    ) -> None:
        """Report what an interrupt left unsent, so nothing disappears in between."""
        start = next((n for n, intent in enumerate(intents) if intent is current), len(intents))
        untried = intents[start + 1 if sent else start :]
        for intent in untried:
            failures.append((intent, interrupt))
            if dispatch_failed.receivers:
                try:
                    dispatch_failed.emit(self, intent=intent, error=interrupt)
                except Exception:  # observers never stop the reporting
                    _log.exception("airlock: a dispatch_failed receiver raised")
        add_note(
            interrupt,
            f"airlock: {len(untried)} intent(s) of {self!r} were not dispatched because of this "
            f"interrupt, and {len(failures) - len(untried)} failed before it; each was reported on "
            "airlock.signals.dispatch_failed, and they are in this exception's airlock_failures",
        )
        interrupt.airlock_failures = failures  # type: ignore[attr-defined]

    def _fail(self, failures: list[tuple[Intent, BaseException]]) -> None:
        if self._reports_only:
            for intent, error in failures:
                _log.error("airlock: %s could not be dispatched from %r", intent, self, exc_info=error)
            return
        raise dispatch_error(self, failures) from failures[0][1]

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> Scope:
        return self.enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.exit()
        if self.should_flush(error):
            self.flush()
        else:
            self.discard(error)

    async def __aenter__(self) -> Scope:
        return self.enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, error, traceback)


def _make_meta(
    name: str | None,
    origin: Any,
    options: Mapping[str, Any] | None,
    local: tuple[Policy, ...],
    capture: Callable[[], Any] | None,
) -> _Meta:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"enqueue(_name=...) must be a string, got {name!r}")
    if options is not None:
        if not isinstance(options, Mapping):
            raise TypeError(
                f"enqueue(_dispatch_options=...) must be a mapping such as {{'countdown': 10}}, got {options!r}"
            )
        options = dict(options)
    return _Meta(name, origin, options, local, capture() if capture is not None else None)


def _check_policy(policy: object, where: str) -> None:
    if type(policy) in _BUILTIN_POLICY_TYPES:
        return
    if isinstance(policy, type):
        name = policy.__name__
        raise TypeError(f"{where} takes a policy instance, got the class {name}; write {name}()")
    if not (callable(getattr(policy, "allows", None)) and callable(getattr(policy, "on_enqueue", None))):
        raise TypeError(
            f"{where} takes a policy: an object with on_enqueue(intent) and allows(intent) "
            f"methods (see airlock.Policy), got {policy!r}"
        )


def _check_on_enqueue(scope: Scope, intent: Intent) -> None:
    """airlock's receiver on ``intent_enqueued``: run ``on_enqueue`` of every policy."""
    meta = intent._meta
    local = () if meta is None else meta.local_policies
    if not (local or scope._gates):
        return
    token = _current.set(_context.PolicyGuard(scope))
    try:
        for policy in local:
            policy.on_enqueue(intent)
        if scope._gates:
            scope._policy.on_enqueue(intent)
    finally:
        _current.reset(token)


def _dispatch(scope: Scope, intent: Intent) -> None:
    """airlock's receiver on ``intent_released``: hand the intent to the executor."""
    routes = scope._routes
    executor = _hooks.executor_override or (routes and routes.get(id(intent))) or scope._route
    try:
        result = executor(intent)
    except Exception as error:
        if dispatch_failed.receivers:
            dispatch_failed.emit(scope, intent=intent, error=error)
        raise
    scope._last_sent = intent  # an interrupt after this point finds it sent
    if intent_dispatched.receivers and not intent_dispatched.is_muted:
        intent_dispatched._notify(scope, {"intent": intent, "result": result})


intent_enqueued._attach_core(_check_on_enqueue, before_observers=True)
intent_released._attach_core(_dispatch, before_observers=False)


def unknown_keywords(where: str, unknown: Mapping[str, Any], valid: tuple[str, ...]) -> str:
    """The message for keywords nobody takes, each with its closest valid one."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{where} got unknown keyword(s) {', '.join(hints)}; the valid ones are {', '.join(valid)}"


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, which Python 3.10 lacks: there the note is kept in
    ``__notes__`` all the same, where tests and tools read it, though not printed."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:
        notes = getattr(error, "__notes__", None)
        if notes is None:
            notes = []
            setattr(error, "__notes__", notes)  # noqa: B010  # typeshed knows __notes__ only from 3.11
        notes.append(note)


def check_dispatch_errors(value: object, where: str) -> str:
    if value not in ("raise", "report"):
        raise TypeError(f"{where} must be 'raise' or 'report', got {value!r}")
    return str(value)


def _init_parameters(cls: type) -> tuple[str, ...]:
    """The keyword names the ``__init__`` methods along ``cls``'s MRO declare."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if name != "self" and parameter.kind in _NAMED and name not in names:
                names.append(name)
    return tuple(names)


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

_STATE_PHRASES = {
    _CREATED: "was never entered",
    _ACTIVE: "is already active",
    _EXITED: "has exited and waits for flush() or discard()",
    _FLUSHED: "has already been flushed",
    _DISCARDED: "has already been discarded",
}

_BUILTIN_POLICY_TYPES = frozenset({AllowAll, AssertNoEffects, BlockTasks, DropAll, LogOnFlush})
