"""Log every moment of a scope's life as a structlog event.

Switch it on once, at start-up::

    import airlock.integrations.structlog

    airlock.integrations.structlog.instrument()

Each airlock signal becomes one event with a stable name and stable keys (see
``docs/observability.md`` for the reference). Task arguments are *not* logged
unless ``include_args=True``: they often carry personal data.

If the application has not configured structlog (``structlog.is_configured()``
is false when the event happens), the same events go to the standard library's
``airlock`` logger instead, with the fields under the record's ``airlock``
attribute. airlock never configures logging or prints on its own.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from time import time_ns
from typing import Any

try:
    import structlog
except ImportError as error:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "airlock.integrations.structlog needs structlog: pip install 'airlock-dispatch[structlog]'"
    ) from error

from airlock._intent import Intent
from airlock._scope import Scope
from airlock.integrations._observe import (
    Receivers,
    error_text,
    message_id,
    system_of,
)
from airlock.signals import outbox as outbox_signals

__all__ = ["EVENTS", "OUTBOX_EVENTS", "instrument", "is_instrumented", "uninstrument"]

EVENTS: dict[str, str] = {
    "scope_entered": "airlock.scope.entered",
    "intent_enqueued": "airlock.intent.enqueued",
    "intent_captured": "airlock.intent.captured",
    "intent_dropped": "airlock.intent.dropped",
    "intent_dispatched": "airlock.intent.dispatched",
    "dispatch_failed": "airlock.intent.dispatch_failed",
    "scope_flushed": "airlock.scope.flushed",
    "scope_discarded": "airlock.scope.discarded",
}
"""Signal name -> the event name it is logged under. These names are stable."""

OUTBOX_EVENTS: dict[str, tuple[str, int]] = {
    "relay_started": ("airlock.outbox.relay_started", logging.INFO),
    "relay_stopped": ("airlock.outbox.relay_stopped", logging.INFO),
    "relay_batch": ("airlock.outbox.relay_batch", logging.INFO),
    "relay_paused": ("airlock.outbox.relay_paused", logging.WARNING),
    "relay_progress": ("airlock.outbox.relay_progress", logging.INFO),
    "row_failed": ("airlock.outbox.row_failed", logging.WARNING),
    "row_dead": ("airlock.outbox.row_dead", logging.ERROR),
    "rows_held": ("airlock.outbox.rows_held", logging.WARNING),
    "rows_recovered": ("airlock.outbox.rows_recovered", logging.WARNING),
    "task_unresolved": ("airlock.outbox.task_unresolved", logging.ERROR),
    "handoff_full": ("airlock.outbox.handoff_full", logging.WARNING),
}
"""Outbox signal (``airlock.signals.outbox``) -> its event name and level. These names are stable."""

_ENQUEUED = EVENTS["intent_enqueued"]
_DISPATCHED = EVENTS["intent_dispatched"]

_stdlib_logger = logging.getLogger("airlock")
_METHODS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


def _deferral_ms(intent: Intent, released_ns: int) -> float:
    """Milliseconds held, to the microsecond (integer steps: ``round()`` costs more than the rest)."""
    stamp: int = intent.enqueued_at_ns
    return (released_ns - stamp) // 1000 / 1000


class _Fields:
    """Renders an event's fields as ``key=value`` only if a handler formats the record."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{key}={value!r}" for key, value in self.fields.items() if key != "exc_info")


class _LogSubscriber:
    """One receiver per signal, all writing to the same logger."""

    def __init__(self, logger: Any, include_args: bool) -> None:
        self._logger = logger
        # One lazy proxy, so structlog's cache_logger_on_first_use can take effect;
        # until its first use it follows any later structlog.configure().
        self._default_logger = structlog.get_logger("airlock")
        self._include_args = include_args
        # Release time per in-flight intent, so the deferral excludes the executor's own time.
        self._released: dict[int, int] = {}
        self.receivers = Receivers(self)
        self.outbox = [(signal, self._outbox_receiver(signal.name)) for signal in outbox_signals.ALL]

    def _outbox_receiver(self, name: str) -> Any:
        event, level = OUTBOX_EVENTS[name]

        def receive(sender: Any, **kwargs: Any) -> None:
            if not self._is_enabled(level):
                return
            key = "scope_id" if isinstance(sender, Scope) else "relay_id"
            fields: dict[str, Any] = {key: getattr(sender, "id", None)}
            for field, value in kwargs.items():
                fields[field] = error_text(value) if isinstance(value, BaseException) else value
            self._log(level, event, fields)

        return receive

    def wake_if_enabled(self) -> None:
        """Connect the per-intent receivers once events would be written somewhere."""
        if not self.receivers.is_awake and self._is_enabled(logging.INFO):
            self.receivers.wake()

    # -- writing ----------------------------------------------------------------

    def _is_enabled(self, level: int) -> bool:
        """False only when the events would go to a stdlib logger that drops ``level``.

        Checked before building an event, so an unconfigured application pays
        next to nothing. structlog loggers do their own filtering.
        """
        return self._logger is not None or structlog.is_configured() or _stdlib_logger.isEnabledFor(level)

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        logger = self._logger
        if logger is None and not structlog.is_configured():
            # The application uses plain logging: stay inside it, never configure it.
            exc_info = fields.pop("exc_info", None)
            _stdlib_logger.log(
                level,
                "%s %s",
                event,
                _Fields(fields),
                exc_info=exc_info,
                extra={"airlock": {"event": event, **fields}},
            )
            return
        if logger is None:
            logger = self._default_logger
        getattr(logger, _METHODS[level])(event, **fields)

    def _intent_fields(self, scope: Scope, intent: Intent) -> dict[str, Any]:
        fields = {
            "scope_id": scope.id,
            "intent_id": intent.id,
            "intent_name": intent.name,
            "origin": intent.origin,
        }
        if self._include_args:
            fields["args"] = intent.args
            fields["kwargs"] = intent.kwargs
        return fields

    # -- receivers ----------------------------------------------------------------

    def scope_entered(self, scope: Scope) -> None:
        self.wake_if_enabled()
        if self._is_enabled(logging.DEBUG):
            parent = scope.parent
            self._log(
                logging.DEBUG,
                EVENTS["scope_entered"],
                {"scope_id": scope.id, "parent_scope_id": None if parent is None else parent.id},
            )

    # The per-intent receivers write straight to a structlog logger, without
    # building a dict of fields first; the other receivers, the stdlib fallback and
    # include_args go through _log.

    def _direct_logger(self) -> Any:
        """The structlog logger a per-intent event can be written to directly, or None."""
        if self._include_args:
            return None
        if self._logger is not None:
            return self._logger
        if structlog.is_configured():
            return self._default_logger.bind()  # the cached logger, if structlog caches
        return None

    def intent_enqueued(self, scope: Scope, *, intent: Intent) -> None:
        log = self._direct_logger()
        if log is None:
            if self._is_enabled(logging.DEBUG):
                self._log(logging.DEBUG, _ENQUEUED, self._intent_fields(scope, intent))
            return
        # A filtering logger (structlog's default kind) set above DEBUG would drop the
        # event: ask it first rather than build the event for nothing. Only a method
        # the class defines counts: a proxy's __getattr__ would log a call to it.
        is_enabled_for = getattr(type(log), "is_enabled_for", None)
        if is_enabled_for is not None and not is_enabled_for(log, logging.DEBUG):
            return
        meta = intent._meta
        log.debug(
            _ENQUEUED,
            scope_id=scope.id,
            intent_id=intent.id,
            intent_name=intent.name,
            origin=None if meta is None else meta.origin,
        )

    def intent_captured(self, scope: Scope, *, intent: Intent, child: Scope) -> None:
        if self._is_enabled(logging.DEBUG):
            fields = self._intent_fields(scope, intent)
            fields["child_scope_id"] = child.id
            fields["outcome"] = "captured"
            self._log(logging.DEBUG, EVENTS["intent_captured"], fields)

    def intent_dropped(self, scope: Scope, *, intent: Intent, policy: Any) -> None:
        if self._is_enabled(logging.INFO):
            fields = self._intent_fields(scope, intent)
            fields["outcome"] = "dropped"
            fields["policy"] = type(policy).__name__
            self._log(logging.INFO, EVENTS["intent_dropped"], fields)

    def intent_released(self, scope: Scope, *, intent: Intent) -> None:
        # Not an event of its own: it only marks when the held time ended. The
        # dispatched or failed event that always follows takes it out again.
        self._released[id(intent)] = time_ns()

    def _finished(self, scope: Scope, intent: Intent, outcome: str) -> dict[str, Any]:
        released = self._released.pop(id(intent), None) or time_ns()
        fields = self._intent_fields(scope, intent)
        fields["outcome"] = outcome
        fields["deferral_ms"] = _deferral_ms(intent, released)
        return fields

    def intent_dispatched(self, scope: Scope, *, intent: Intent, result: Any) -> None:
        log = self._direct_logger()
        if log is None:
            if self._is_enabled(logging.INFO):
                fields = self._finished(scope, intent, "dispatched")
                fields["message_id"] = message_id(system_of(scope, intent), result)
                self._log(logging.INFO, _DISPATCHED, fields)
            else:
                self._released.pop(id(intent), None)
            return
        released = self._released.pop(id(intent), None) or time_ns()
        meta = intent._meta
        log.info(
            _DISPATCHED,
            scope_id=scope.id,
            intent_id=intent.id,
            intent_name=intent.name,
            origin=None if meta is None else meta.origin,
            outcome="dispatched",
            deferral_ms=_deferral_ms(intent, released),
            message_id=None if result is None else message_id(system_of(scope, intent), result),
        )

    def dispatch_failed(self, scope: Scope, *, intent: Intent, error: BaseException) -> None:
        if self._is_enabled(logging.ERROR):
            fields = self._finished(scope, intent, "failed")
            fields["error"] = error_text(error)
            fields["exc_info"] = error
            self._log(logging.ERROR, EVENTS["dispatch_failed"], fields)
        else:
            self._released.pop(id(intent), None)

    def scope_flushed(self, scope: Scope, *, intents: list[Intent]) -> None:
        if self._is_enabled(logging.INFO):
            fields = {"scope_id": scope.id, "outcome": "flushed", "intents": len(intents)}
            self._log(logging.INFO, EVENTS["scope_flushed"], fields)

    def scope_discarded(self, scope: Scope, *, intents: list[Intent], error: BaseException | None) -> None:
        if self._is_enabled(logging.INFO):
            fields = {
                "scope_id": scope.id,
                "outcome": "discarded",
                "intents": len(intents),
                "error": error_text(error),
            }
            self._log(logging.INFO, EVENTS["scope_discarded"], fields)


_subscriber: _LogSubscriber | None = None


def instrument(*, logger: Any = None, include_args: bool = False) -> None:
    """Log airlock's events: connect one subscriber to every signal.

    Calling it again while instrumented replaces the previous subscriber.

    Args:
        logger: A structlog logger to write to. Default: ``structlog.get_logger("airlock")``
            when structlog is configured, else the stdlib ``airlock`` logger.
        include_args: Add the task's ``args`` and ``kwargs`` to intent events.
            Off by default, because arguments often carry personal data.

    .. versionadded:: 0.1
    """
    global _subscriber
    uninstrument()
    subscriber = _LogSubscriber(logger, include_args)
    subscriber.receivers.connect()
    for signal, receiver in subscriber.outbox:
        signal.connect(receiver, weak=False)
    subscriber.wake_if_enabled()
    _subscriber = subscriber


def uninstrument() -> None:
    """Disconnect exactly what :func:`instrument` connected (a no-op when it is off).

    .. versionadded:: 0.1
    """
    global _subscriber
    subscriber, _subscriber = _subscriber, None
    if subscriber is not None:
        subscriber.receivers.disconnect()
        for signal, receiver in subscriber.outbox:
            signal.disconnect(receiver)


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect.

    .. versionadded:: 0.1
    """
    return _subscriber is not None
