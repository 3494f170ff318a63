"""``drain_outbox()``: publish everything the outbox holds, in a test, or fail saying why not."""

from __future__ import annotations

from collections.abc import Sequence
from time import time

from airlock.integrations.django.outbox._background import background_publisher, fast_path_sent
from airlock.integrations.django.outbox._markline import confirm_lines
from airlock.integrations.django.outbox._models import READY, OutboxMessage
from airlock.integrations.django.outbox._options import outbox_options
from airlock.integrations.django.outbox._relay import Pass, Relay

__all__ = ["OutboxStuck", "drain_outbox", "start_counting"]

_reported = 0  # fast_path_sent() as the previous drain (or start_counting()) saw it


class OutboxStuck(AssertionError):
    """``drain_outbox()`` made no progress while rows were still waiting to be delivered.

    .. versionadded:: 0.1
    """


def drain_outbox(*, databases: Sequence[str] | None = None, relay: Relay | None = None, max_passes: int = 100) -> Pass:
    """Deliver everything the outbox holds, and return what was delivered.

    For tests, whatever ``FAST_PATH`` is. It first waits for this process's
    background publisher to publish what it was handed (and for the ready
    marks sent without waiting), then runs a relay until no ``ready`` row is
    left; that relay does not wait out the grace a relay gives a row's writer
    (``FAST_PATH_DEADLINE``). The result's ``sent`` counts what this process's
    fast path published since the previous drain (or since the test began, with
    the pytest fixture), plus what the relay sent now, so a test asserts on its
    deliveries the same way with any fast path; ``sent_ids`` lists the relay's.

    A pass that sends nothing while rows still wait (the broker is unreachable,
    a task cannot be resolved, a row is backing off) fails at once with
    :class:`OutboxStuck`, naming the waiting rows and why, rather than looping
    or passing silently.

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
    confirm_lines()  # a ready mark still on its way would leave its rows pending, unseen
    relay = relay or Relay(databases=databases, clock=lambda: time() + outbox_options()["FAST_PATH_DEADLINE"])
    total = Pass(sent=_fast_path_share())
    for _ in range(max_passes):
        waiting = _waiting(relay.databases)
        if not waiting:
            return total
        done = relay.run_once()
        total.add(done)
        if not done.sent:
            raise OutboxStuck(_stuck_message(_waiting(relay.databases), done))
    raise OutboxStuck(f"the outbox still had rows to deliver after {max_passes} passes: {_waiting(relay.databases)}")


def start_counting() -> None:
    """Make the next drain report only what the fast path publishes from now on (a test's start)."""
    global _reported
    _reported = fast_path_sent()


def _fast_path_share() -> int:
    """What the fast path published since the previous drain."""
    global _reported
    now = fast_path_sent()
    share, _reported = now - _reported, now
    return share


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
    for (executor, task), fix in done.unresolved.items():  # the relay's configuration, not the rows
        reason += f"this process cannot resolve the {executor} task {task!r} ({fix}); "
    return (
        f"drain_outbox() made no progress: {reason}{len(waiting)} row(s) still wait to be delivered: "
        + "; ".join(waiting[:10])
        + (" ..." if len(waiting) > 10 else "")
    )
