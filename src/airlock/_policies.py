"""The built-in policies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, final

from airlock._errors import PolicyViolation
from airlock._intent import is_task_object, task_name

if TYPE_CHECKING:
    from airlock._intent import Intent

__all__ = ["AllowAll", "AssertNoEffects", "BlockTasks", "DropAll", "LogOnFlush"]


class _PolicyBase:
    """Shared defaults: accept at enqueue, allow at flush."""

    __slots__ = ()

    def on_enqueue(self, intent: Intent) -> None:
        """Accept every intent as it is recorded."""

    def allows(self, intent: Intent) -> bool:
        """Allow every intent at flush."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@final
class AllowAll(_PolicyBase):
    """Let every intent through. The default policy.

    .. versionadded:: 0.1
    """

    __slots__ = ()


@final
class DropAll(_PolicyBase):
    """Drop every intent at flush: a dry run. Each drop is reported on ``intent_dropped``.

    .. versionadded:: 0.1
    """

    __slots__ = ()

    def allows(self, intent: Intent) -> bool:
        return False


@final
class AssertNoEffects(_PolicyBase):
    """Fail loudly at the first enqueue: for code that must have no side effects.

    .. versionadded:: 0.1
    """

    __slots__ = ()

    def on_enqueue(self, intent: Intent) -> None:
        raise PolicyViolation(
            f"Unexpected side effect: {intent} was enqueued where AssertNoEffects forbids "
            "side effects; move the call out of this block or choose another policy"
        )

    def allows(self, intent: Intent) -> bool:
        """Never: an intent that got this far (captured from a descendant) is still unexpected."""
        return False


@final
class BlockTasks(_PolicyBase):
    """Drop (or refuse outright) intents whose task name is in ``names``.

    Args:
        names: Task names as :attr:`Intent.name` gives them (``"send_email"``), or
            the tasks themselves (``BlockTasks([send_sms])``), which stand for their
            names.
        raise_on_enqueue: Raise ``PolicyViolation`` at enqueue instead of dropping
            quietly at flush.

    .. versionadded:: 0.1
    """

    __slots__ = ("names", "raise_on_enqueue")

    def __init__(self, names: Iterable[str | Callable[..., Any]], *, raise_on_enqueue: bool = False) -> None:
        if isinstance(names, str):
            raise TypeError(
                f"BlockTasks takes a collection of task names, got the string {names!r}; "
                f"write BlockTasks({{{names!r}}})"
            )
        if not isinstance(names, Iterable) or callable(names) or is_task_object(names):
            raise TypeError(
                f"BlockTasks takes a collection of task names or tasks, got {names!r}; "
                f"write BlockTasks([{task_name(names) if callable(names) else 'send_email'!r}])"
            )
        self.names = frozenset(_as_name(entry) for entry in names)
        self.raise_on_enqueue = raise_on_enqueue

    def on_enqueue(self, intent: Intent) -> None:
        if self.raise_on_enqueue and intent.name in self.names:
            raise PolicyViolation(f"{intent} is blocked by BlockTasks({sorted(self.names)})")

    def allows(self, intent: Intent) -> bool:
        return intent.name not in self.names

    def __repr__(self) -> str:
        return f"BlockTasks({sorted(self.names)!r}, raise_on_enqueue={self.raise_on_enqueue})"


@final
class LogOnFlush(_PolicyBase):
    """Allow everything and log each intent at flush, at INFO.

    Args:
        logger: Where to log; the ``airlock`` logger when omitted.

    .. versionadded:: 0.1
    """

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("airlock")

    def __repr__(self) -> str:
        return f"LogOnFlush(logger={self.logger.name!r})"

    def allows(self, intent: Intent) -> bool:
        self.logger.info("airlock: flushing %s", intent)
        return True


def _as_name(entry: object) -> str:
    if isinstance(entry, str):
        return entry
    if callable(entry) or is_task_object(entry):
        return task_name(entry)  # type: ignore[arg-type]
    raise TypeError(f"BlockTasks takes task names (strings) or tasks, got {entry!r} of type {type(entry).__name__}")


def is_allow_all(policy: object) -> bool:
    """True for policies that judge nothing, so a flush can skip judging."""
    return type(policy) is AllowAll


def checks_on_enqueue(policy: object) -> bool:
    """False when the policy's ``on_enqueue`` is the inherited no-op."""
    return getattr(type(policy), "on_enqueue", None) is not _PolicyBase.on_enqueue
