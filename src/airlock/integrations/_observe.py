"""What the structlog and OpenTelemetry bridges both need to know about an event."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airlock import _context, signals
from airlock._executors import sync_executor

if TYPE_CHECKING:
    from airlock._intent import Intent
    from airlock._scope import Scope

__all__ = ["Receivers", "error_text", "executor_of", "held_ms", "message_id", "messaging_system", "system_of"]

_EXECUTORS_PACKAGE = "airlock.integrations.executors."
_ID_ATTRIBUTES = ("message_id", "id", "task_id")


_HOT = frozenset({"intent_enqueued", "intent_released", "intent_dispatched"})


class Receivers:
    """A subscriber's receivers: each airlock signal paired with its method of the same name.

    The signals every intent goes through (enqueue, release, dispatch) are the
    *hot* ones. They are connected only once the subscriber would record
    something (:meth:`wake`), so a bridge that is switched on while nothing is
    configured costs one cheap receiver per scope, not three per intent. Waking
    is final: going back to sleep could strand an intent between its release
    and its dispatch.
    """

    def __init__(self, subscriber: object) -> None:
        pairs = [(signal, getattr(subscriber, signal.name, None)) for signal in signals.ALL]
        present = [(signal, receiver) for signal, receiver in pairs if receiver is not None]
        self.cold = [(signal, receiver) for signal, receiver in present if signal.name not in _HOT]
        self.hot = [(signal, receiver) for signal, receiver in present if signal.name in _HOT]
        self.is_awake = False
        self._lock = threading.Lock()

    def connect(self) -> None:
        for signal, receiver in self.cold:
            signal.connect(receiver, weak=False)

    def wake(self) -> None:
        if self.is_awake:
            return
        with self._lock:
            if not self.is_awake:
                for signal, receiver in self.hot:
                    signal.connect(receiver, weak=False)
                self.is_awake = True

    def disconnect(self) -> None:
        with self._lock:
            for signal, receiver in self.cold + (self.hot if self.is_awake else []):
                signal.disconnect(receiver)
            self.is_awake = False


def executor_of(scope: Scope, intent: Intent | None = None) -> Callable[[Intent], Any]:
    """The executor that will send ``intent`` (else the scope's own), as the core decides.

    A test override wins; a captured intent keeps the executor of the scope it was
    enqueued in (:meth:`Scope.executor_for`).
    """
    if intent is None:
        return _context.hooks.executor_override or scope._route
    return scope.executor_for(intent)


# Executor -> its messaging system. Executors are few and long-lived, and working the
# name out costs a few getattr calls per intent; a cap keeps a stream of new ones bounded.
_systems: dict[Any, str] = {}
_SYSTEMS_CAP = 256


def system_of(scope: Scope, intent: Intent | None = None) -> str:
    """``messaging_system(executor_of(scope, intent))``, remembered per executor."""
    executor = executor_of(scope, intent)
    try:
        return _systems[executor]
    except KeyError:
        pass
    except TypeError:  # an unhashable executor
        return messaging_system(executor)
    system = messaging_system(executor)
    if len(_systems) >= _SYSTEMS_CAP:
        _systems.clear()
    _systems[executor] = system
    return system


def messaging_system(executor: Callable[..., Any]) -> str:
    """A short, low-cardinality name for where an executor sends intents.

    ``celery``, ``dramatiq``, ``huey`` or ``django_q`` for airlock's executors
    (the same names the worker side passes to ``continue_trace``), ``sync`` for
    the default one, else the executor's ``messaging_system`` attribute or ``custom``.
    """
    if executor is sync_executor:
        return "sync"
    declared = getattr(executor, "messaging_system", None)
    if isinstance(declared, str):
        return declared
    module = getattr(executor, "__module__", None) or type(executor).__module__
    if module.startswith(_EXECUTORS_PACKAGE):
        return module[len(_EXECUTORS_PACKAGE) :].partition(".")[0]
    return "custom"


def message_id(system: str, result: Any) -> str | None:
    """The queue's id for the message an executor sent, if its result carries one.

    Celery's ``AsyncResult.id``, Dramatiq's ``Message.message_id``, Huey's
    ``Result.id``, django-q2's task id (a string). The sync executor's result is
    the task's return value, which is never a message id.
    """
    if system == "sync" or result is None:
        return None
    if isinstance(result, str):
        return result
    for attribute in _ID_ATTRIBUTES:
        value = getattr(result, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def held_ms(intent: Intent, now_ns: int) -> float:
    """How long the intent waited between its enqueue and ``now_ns``, in milliseconds."""
    return (now_ns - int(intent.enqueued_at_ns)) / 1e6


def error_text(error: BaseException | None) -> str | None:
    """``"TypeError: message"``: short enough for a log key or a span attribute."""
    if error is None:
        return None
    return f"{type(error).__name__}: {error}"
