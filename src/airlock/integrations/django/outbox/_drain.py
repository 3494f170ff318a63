"""``drain_outbox()``: publish everything the outbox holds, in a test, or fail saying why not."""

from __future__ import annotations

from collections.abc import Sequence
from time import time

from airlock.integrations.django.outbox._background import background_publisher
from airlock.integrations.django.outbox._models import READY, OutboxMessage
from airlock.integrations.django.outbox._options import outbox_options
from airlock.integrations.django.outbox._relay import Pass, Relay

__all__ = ["OutboxStuck", "drain_outbox"]


class OutboxStuck(AssertionError):
    """``drain_outbox()`` made no progress while rows were still waiting to be delivered.

    .. versionadded:: 0.1
    """


def drain_outbox(*, databases: Sequence[str] | None = None, relay: Relay | None = None, max_passes: int = 100) -> Pass:
    """Run the relay until no ``ready`` row is left, and return what it did.

    For tests: after the code under test committed (with the fast path off, or
    its broker down), this delivers what the relay would. It first waits for
    this process's background publisher, and its relay does not wait out the
    grace a relay gives a row's writer (``FAST_PATH_DEADLINE``). A pass that sends
    nothing while rows still wait (the broker is unreachable, a task cannot be
    resolved, a row is backing off) fails at once with :class:`OutboxStuck`,
    naming the waiting rows and why, rather than looping or passing silently.

    Args:
        databases: The aliases to drain (default: as the relay serves).
        relay: A relay of your own (a test clock, say); default ``Relay(databases=...)``.
        max_passes: A bound on the passes, for rows that keep coming.

    Raises:
        OutboxStuck: A pass published nothing while rows were waiting.

    .. versionadded:: 0.1
    """
    publisher = background_publisher()
    if publisher is not None:  # what the fast path was handed goes first, as it would
        publisher.drain(outbox_options()["FAST_PATH_DEADLINE"] + 5.0)
    relay = relay or Relay(databases=databases, clock=lambda: time() + outbox_options()["FAST_PATH_DEADLINE"])
    total = Pass()
    for _ in range(max_passes):
        waiting = _waiting(relay.databases)
        if not waiting:
            return total
        done = relay.run_once()
        total.add(done)
        if not done.sent:
            raise OutboxStuck(_stuck_message(_waiting(relay.databases), done))
    raise OutboxStuck(f"the outbox still had rows to deliver after {max_passes} passes: {_waiting(relay.databases)}")


def _waiting(databases: Sequence[str]) -> list[str]:
    rows: list[str] = []
    for alias in databases:
        found = OutboxMessage.objects.using(alias).filter(state=READY).order_by("id")
        for task, attempts, error in found.values_list("task", "attempts", "last_error"):
            why = f", last error: {error.strip().splitlines()[-1]}" if error.strip() else ""
            rows.append(f"{task} on {alias!r} (attempts {attempts}{why})")
    return rows


def _stuck_message(waiting: list[str], done: Pass) -> str:
    reason = f"the broker is unreachable ({done.unreachable}); " if done.unreachable is not None else ""
    return (
        f"drain_outbox() made no progress: {reason}{len(waiting)} row(s) still wait to be delivered: "
        + "; ".join(waiting[:10])
        + (" ..." if len(waiting) > 10 else "")
    )
