"""Every exception airlock raises on purpose, under one base class."""

from __future__ import annotations

__all__ = [
    "AirlockError",
    "NoScopeError",
    "PolicyEnqueueError",
    "PolicyViolation",
    "ScopeStateError",
    "UsageError",
]


class AirlockError(Exception):
    """Base class of every error airlock raises on purpose.

    .. versionadded:: 0.1
    """


class UsageError(AirlockError):
    """airlock was called in a way it does not support.

    .. versionadded:: 0.1
    """


class NoScopeError(UsageError):
    """``enqueue()`` was called with no scope active.

    airlock never dispatches an intent that no scope owns: open one with
    ``with airlock.scope():`` (or the Django middleware, or a task base class).

    .. versionadded:: 0.1
    """


class PolicyEnqueueError(UsageError):
    """A policy tried to enqueue an intent.

    Policies judge intents; they never create them.

    .. versionadded:: 0.1
    """


class ScopeStateError(AirlockError):
    """A scope was asked for a step its current state does not allow.

    For example flushing a scope that is still active, or flushing it twice.

    .. versionadded:: 0.1
    """


class PolicyViolation(AirlockError):
    """A policy refused an intent at enqueue time.

    Raised from ``Policy.on_enqueue`` (or from any receiver of
    :data:`airlock.signals.intent_enqueued`); the intent is then not buffered
    and the error reaches the code that called ``enqueue()``.

    .. versionadded:: 0.1
    """
