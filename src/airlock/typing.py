"""Protocols and type aliases of airlock's public surface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from airlock._intent import Intent

__all__ = ["Executor", "Policy"]


@runtime_checkable
class Policy(Protocol):
    """Decides which intents may leave a scope.

    ``on_enqueue`` runs when an intent is recorded and may raise
    :class:`~airlock.PolicyViolation` to refuse it on the spot. ``allows`` runs
    at flush and returns ``False`` to drop the intent quietly (it is reported on
    :data:`airlock.signals.intent_dropped`). Neither may enqueue.

    .. versionadded:: 0.1
    """

    def on_enqueue(self, intent: Intent) -> None:
        """Inspect an intent as it is recorded; raise ``PolicyViolation`` to refuse it."""

    def allows(self, intent: Intent) -> bool:
        """Return whether the intent may be dispatched when its scope flushes."""


@runtime_checkable
class Executor(Protocol):
    """Sends one intent on its way: calls it, or hands it to a queue.

    Whatever it returns travels on :data:`airlock.signals.intent_dispatched`
    as ``result``.

    .. versionadded:: 0.1
    """

    def __call__(self, intent: Intent, /) -> Any:
        """Dispatch ``intent`` and return what the queue handed back."""
