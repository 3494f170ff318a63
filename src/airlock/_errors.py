"""Every exception airlock raises on purpose, under one base class."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AirlockError",
    "DispatchError",
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


class DispatchError(AirlockError):
    """A flush could not dispatch some of its intents.

    Every intent of the flush was tried; those whose executor raised are listed
    in the message with their errors, and in :attr:`failures` as ``(intent,
    error)`` pairs, in enqueue order, so a caller can retry them. Each was also
    reported on :data:`airlock.signals.dispatch_failed`. The first error is the
    ``__cause__``, and the error raised is also an instance of the first error's
    class (see :func:`dispatch_error`), so code that caught what the executor
    raised (``except ConnectionError:``) still catches it.

    Attributes:
        failures: The ``(intent, error)`` pairs the flush could not dispatch.

    .. versionadded:: 0.1
    """

    def __init__(self, scope: object, failures: Sequence[tuple[object, BaseException]]) -> None:
        self.scope = scope
        self.failures = list(failures)
        lines = "".join(f"\n  - {intent}: {type(error).__name__}: {error}" for intent, error in failures)
        # BaseException's own __init__, not super(): a mixed-in error class (see
        # dispatch_error) may want other arguments.
        BaseException.__init__(
            self,
            f"{len(failures)} intent(s) of {scope!r} could not be dispatched (each was reported on "
            f"airlock.signals.dispatch_failed; retry them from DispatchError.failures):{lines}",
        )

    def __str__(self) -> str:
        return str(self.args[0])


_kinds: dict[type[BaseException], type[DispatchError]] = {}


def dispatch_error(scope: object, failures: Sequence[tuple[object, BaseException]]) -> DispatchError:
    """A :class:`DispatchError` that is also an instance of the first failure's class."""
    first = type(failures[0][1])
    kind = _kinds.get(first)
    if kind is None:
        try:
            kind = type("DispatchError", (DispatchError, first), {"__module__": __name__})
        except TypeError:  # a class that cannot be mixed in (a layout or MRO conflict)
            kind = DispatchError
        if len(_kinds) < 64:
            _kinds[first] = kind
    try:
        error = kind.__new__(kind)
        DispatchError.__init__(error, scope, failures)
    except Exception:  # the mixed-in class would not be built without its own arguments
        error = DispatchError.__new__(DispatchError)
        DispatchError.__init__(error, scope, failures)
    return error
