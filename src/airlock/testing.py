"""Helpers for testing code that enqueues: see every intent and event, no broker needed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from airlock import _context, signals
from airlock._intent import Intent
from airlock._signal import Signal

__all__ = ["CapturedEvent", "Capture", "capture"]


@dataclass(frozen=True)
class CapturedEvent:
    """One event seen during :func:`capture`: the signal's name, its sender and kwargs."""

    name: str
    sender: Any
    kwargs: dict[str, Any]


@dataclass
class Capture:
    """What :func:`capture` recorded, in the order it happened."""

    events: list[CapturedEvent] = field(default_factory=list)

    def of(self, name: str) -> list[CapturedEvent]:
        """The events of one signal, e.g. ``capture.of("intent_dropped")``."""
        return [event for event in self.events if event.name == name]

    @property
    def names(self) -> list[str]:
        """The signal names, in order: handy for asserting a life cycle."""
        return [event.name for event in self.events]

    @property
    def enqueued(self) -> list[Intent]:
        """Every intent accepted into a scope."""
        return [event.kwargs["intent"] for event in self.of("intent_enqueued")]

    @property
    def dispatched(self) -> list[Intent]:
        """Every intent an executor accepted (or, with ``dispatch=False``, would have)."""
        return [event.kwargs["intent"] for event in self.of("intent_dispatched")]

    @property
    def dropped(self) -> list[Intent]:
        """Every intent a policy refused at flush."""
        return [event.kwargs["intent"] for event in self.of("intent_dropped")]

    @property
    def discarded(self) -> list[Intent]:
        """Every intent dropped with a discarded scope."""
        return [i for event in self.of("scope_discarded") for i in event.kwargs["intents"]]


@contextmanager
def capture(*, dispatch: bool = False) -> Iterator[Capture]:
    """Record every airlock event inside the block.

    Args:
        dispatch: With the default ``False`` no executor runs: intents that would
            go out are recorded as dispatched (with ``result=None``) and nothing
            reaches a broker or runs a task. Pass ``True`` to dispatch for real
            while still recording.

    Example::

        with airlock.testing.capture() as captured:
            place_order(order_id=7)
        assert [i.name for i in captured.dispatched] == ["send_confirmation"]

    .. versionadded:: 0.1
    """
    recorded = Capture()
    receivers: list[tuple[Signal, Callable[..., None]]] = []
    for signal in signals.ALL:
        receiver = _recorder(recorded, signal.name)
        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    previous = _context.hooks.executor_override
    if not dispatch:
        _context.hooks.executor_override = _record_only
    try:
        yield recorded
    finally:
        _context.hooks.executor_override = previous
        for signal, receiver in receivers:
            signal.disconnect(receiver)


def _recorder(recorded: Capture, name: str) -> Callable[..., None]:
    def record(sender: Any, **kwargs: Any) -> None:
        recorded.events.append(CapturedEvent(name, sender, kwargs))

    return record


def _record_only(intent: Intent) -> None:
    return None
