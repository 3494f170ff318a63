"""What the structlog and OpenTelemetry bridges both need to know about an event."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airlock import _context, signals
from airlock._executors import sync_executor
from airlock._signal import Signal

if TYPE_CHECKING:
    from airlock._intent import Intent
    from airlock._scope import Scope

__all__ = ["connections", "error_text", "executor_of", "held_ms", "message_id", "messaging_system"]

_EXECUTORS_PACKAGE = "airlock.integrations.executors."
_ID_ATTRIBUTES = ("message_id", "id", "task_id")


def connections(subscriber: object) -> list[tuple[Signal, Callable[..., Any]]]:
    """Pair each airlock signal with the subscriber's method of the same name, if it has one."""
    pairs = []
    for signal in signals.ALL:
        receiver = getattr(subscriber, signal.name, None)
        if receiver is not None:
            pairs.append((signal, receiver))
    return pairs


def executor_of(scope: Scope) -> Callable[[Intent], Any]:
    """The executor that will send the scope's intents (a test override wins, as in the core)."""
    return _context.hooks.executor_override or scope.executor


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
