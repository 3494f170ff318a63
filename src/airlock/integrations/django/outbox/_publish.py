"""Publishing a run of rows in order: shared by the fast path and the relay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from airlock._intent import Intent
from airlock.integrations.django.outbox._carriers import Carrier, batches, is_unreachable
from airlock.signals import dispatch_failed, intent_dispatched, intent_released

__all__ = ["Message", "Outcome", "publish"]


@dataclass(slots=True)
class Message:
    """One row, ready to publish: its carrier, its task (resolved) and its arguments."""

    intent_id: str
    carrier: Carrier
    task: Any
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    ref: Any = None  # the caller's own handle (the intent, or the row's primary key)


@dataclass(slots=True)
class Outcome:
    """What one publish run did, in order."""

    sent: list[tuple[Message, Any]] = field(default_factory=list)
    failed: list[tuple[Message, BaseException]] = field(default_factory=list)
    untried: list[Message] = field(default_factory=list)
    unreachable: BaseException | None = None  # why the run stopped early, if the broker is down


def publish(
    messages: Sequence[Message],
    *,
    deadline: float | None = None,
    stop: Any = None,
    sender: Callable[[Message], Any] | None = None,
) -> Outcome:
    """Send ``messages`` in order over one connection per carrier.

    A failure that says the broker cannot be reached stops the run at once: the
    message and those after it are ``untried``, not failed, so no attempt is
    spent on a broker that is down. Any other failure is that message's own,
    and the run goes on. Past ``deadline`` (a ``time.monotonic()`` value), or once
    ``stop`` (an event) is set, the rest is left ``untried``.

    With ``sender`` (the scope of a message whose ``ref`` is its intent), each
    publish is observed as a dispatch is: ``intent_released`` right before it
    (so tracing opens the dispatch span, in the enqueue-time trace, and the
    message carries it), then ``intent_dispatched`` or ``dispatch_failed``.
    """
    outcome = Outcome()
    carriers = {id(message.carrier): message.carrier for message in messages}
    with batches(iter(carriers.values())):
        for position, message in enumerate(messages):
            if (deadline is not None and monotonic() > deadline) or (stop is not None and stop.is_set()):
                outcome.untried = list(messages[position:])
                break
            scope = sender(message) if sender is not None and isinstance(message.ref, Intent) else None
            if scope is not None and intent_released.receivers and not intent_released.is_muted:
                intent_released._notify(scope, {"intent": message.ref})  # observers only: the carrier sends
            try:
                result = message.carrier.send(
                    message.task, message.args, message.kwargs, message.options, message.intent_id
                )
            except Exception as error:
                if scope is not None and dispatch_failed.receivers:
                    dispatch_failed.emit(scope, intent=message.ref, error=error)
                if is_unreachable(error):
                    outcome.unreachable = error
                    outcome.untried = list(messages[position:])
                    break
                outcome.failed.append((message, error))
            else:
                if scope is not None and intent_dispatched.receivers:
                    intent_dispatched.emit(scope, intent=message.ref, result=result)
                outcome.sent.append((message, result))
    return outcome
