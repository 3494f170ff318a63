"""Publishing a run of rows in order: shared by the fast path and the relay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from airlock._context import hooks
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
    name: str = ""  # the task's registered name (the relay's messages; an intent names itself)
    trace: dict[str, Any] | None = None  # the enqueue's trace context, as the row stored it


@dataclass(slots=True)
class Outcome:
    """What one publish run did, in order."""

    sent: list[tuple[Message, Any]] = field(default_factory=list)
    failed: list[tuple[Message, BaseException]] = field(default_factory=list)
    untried: list[Message] = field(default_factory=list)
    unreachable: BaseException | None = None  # why the run stopped early, if the broker is down


PUSH_EVERY = 100  # messages a buffering carrier holds before they are pushed


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

    A carrier that buffers (Celery on Redis: one pipeline) has its messages
    pushed every :data:`PUSH_EVERY` messages and at the end of the run; only
    then are they ``sent``. A push that fails covers every message it held:
    ``untried`` if the broker is unreachable (the run stops), else ``failed``.

    With ``sender`` (the scope of a message whose ``ref`` is its intent), each
    publish is observed as a dispatch is: ``intent_released`` right before it
    (so tracing opens the dispatch span, in the enqueue-time trace, and the
    message carries it), then ``intent_dispatched`` (when it was handed to the
    carrier) or ``dispatch_failed`` (also after ``intent_dispatched``, when
    the push of a buffered message failed).
    """
    outcome = Outcome()
    carriers = {id(message.carrier): message.carrier for message in messages}
    with batches(iter(carriers.values())) as flushes:
        held: dict[int, list[tuple[Message, Any, Any]]] = {key: [] for key in flushes}
        for position, message in enumerate(messages):
            if (deadline is not None and monotonic() > deadline) or (stop is not None and stop.is_set()):
                outcome.untried = list(messages[position:])
                break
            scope = sender(message) if sender is not None and isinstance(message.ref, Intent) else None
            if scope is not None and intent_released.receivers and not intent_released.is_muted:
                intent_released._notify(scope, {"intent": message.ref})  # observers only: the carrier sends
            try:
                if scope is None and message.trace is not None and hooks.send_in_trace is not None:
                    result = _send_in_trace(message)
                else:
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
                continue
            if scope is not None and intent_dispatched.receivers:
                intent_dispatched.emit(scope, intent=message.ref, result=result)
            waiting = held.get(id(message.carrier))
            if waiting is None:
                outcome.sent.append((message, result))
                continue
            waiting.append((message, result, scope))
            if len(waiting) >= PUSH_EVERY and not _push(flushes[id(message.carrier)], waiting, outcome):
                if outcome.unreachable is not None:
                    outcome.untried.extend(messages[position + 1 :])
                    break
        for key, waiting in held.items():
            if waiting:
                _push(flushes[key], waiting, outcome)
    return outcome


def _send_in_trace(message: Message) -> Any:
    """A relay's publish, in the trace its row recorded at enqueue (its send span current around it)."""
    assert hooks.send_in_trace is not None
    with hooks.send_in_trace(message.trace, name=message.name, system=message.carrier.key, intent_id=message.intent_id):
        return message.carrier.send(message.task, message.args, message.kwargs, message.options, message.intent_id)


def _push(flush: Callable[[], None], waiting: list[tuple[Message, Any, Any]], outcome: Outcome) -> bool:
    """Push a buffering carrier's held messages; file them as sent, or (all of them) as not."""
    taken = waiting[:]
    waiting.clear()
    try:
        flush()
    except Exception as error:
        for message, _result, scope in taken:
            if scope is not None and dispatch_failed.receivers:
                dispatch_failed.emit(scope, intent=message.ref, error=error)
        if is_unreachable(error):
            outcome.unreachable = outcome.unreachable or error
            outcome.untried[:0] = [message for message, _result, _scope in taken]
        else:
            outcome.failed.extend((message, error) for message, _result, _scope in taken)
        return False
    outcome.sent.extend((message, result) for message, result, _scope in taken)
    return True
