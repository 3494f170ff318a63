"""airlock's pytest plugin: fixtures and a marker for tests of code that enqueues.

Installed with the package and loaded by pytest through the ``pytest11`` entry
point, so there is nothing to configure. It adds:

- ``airlock_capture``: a :class:`airlock.testing.Capture` recording every intent
  and event of the test, with nothing dispatched; ``airlock_capture.run()`` then
  runs the intents that went out in this process, synchronously, and
  ``airlock_capture.assert_enqueued(name, args=..., kwargs=...)`` checks one was
  enqueued, listing what was when it was not.
- ``airlock_eager``: the same record, but every intent that goes out runs here at
  once, whatever the executor (Celery's ``task_always_eager``, for every queue).
- ``airlock_drain_outbox``: for Django projects with the outbox on, a function
  that waits for the fast path, runs the relay until nothing is left to deliver,
  and reports what the test delivered; it fails the test when a pass makes no
  progress (``airlock.integrations.django.outbox.drain_outbox``).
- ``@pytest.mark.airlock_no_enqueue``: the test fails if its body enqueues
  anything, naming each intent, and what it enqueued is stopped before it is
  dispatched: no task runs, nothing reaches a broker. It works on plain
  functions and on the methods of ``unittest`` and Django ``TestCase`` classes.

The plugin changes nothing in a test that does not ask for it: no autouse
fixture, and airlock is imported only when a fixture or the marker is used.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airlock._intent import Intent
    from airlock.testing import Capture

__all__ = ["airlock_capture", "airlock_drain_outbox", "airlock_eager"]

NO_ENQUEUE = "airlock_no_enqueue"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{NO_ENQUEUE}: fail the test if its body enqueues any airlock intent (airlock's pytest plugin)",
    )


@pytest.fixture
def airlock_capture() -> Iterator[Capture]:
    """Record the test's intents and events; no executor runs (``airlock.testing.capture()``)."""
    from airlock.testing import capture

    with capture() as captured:
        yield captured


@pytest.fixture
def airlock_eager() -> Iterator[Capture]:
    """Record the test's intents and events, and run each intent that goes out here and now."""
    from airlock.testing import capture

    with capture(eager=True) as captured:
        yield captured


@pytest.fixture
def airlock_drain_outbox() -> Any:
    """``drain_outbox``: deliver what the outbox holds, or fail naming what is stuck; counts from the test's start."""
    from airlock.integrations.django.outbox import drain_outbox
    from airlock.integrations.django.outbox._drain import start_counting

    start_counting()  # what the fast path published in earlier tests is not this test's
    return drain_outbox


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if item.get_closest_marker(NO_ENQUEUE) is None:
        return (yield)
    from airlock import _context, signals

    seen: list[Intent] = []

    def record(sender: Any, intent: Intent, **kwargs: Any) -> None:
        seen.append(intent)

    # Every intent stops at its executor, as in airlock.testing.capture(): the test
    # fails for what it enqueued, and no task it asked for runs (or reaches a broker) first.
    previous = _context.hooks.executor_override
    _context.hooks.executor_override = _stopped
    signals.intent_enqueued.connect(record, weak=False)
    try:
        result = yield
    finally:
        signals.intent_enqueued.disconnect(record)
        _context.hooks.executor_override = previous
    if seen:
        listed = "\n".join(f"  - {intent}" for intent in seen)
        pytest.fail(
            f"{item.name} is marked {NO_ENQUEUE}, but it enqueued {len(seen)} intent(s), "
            f"stopped before they were dispatched:\n{listed}",
            pytrace=False,
        )
    return result


def _stopped(intent: Intent) -> None:
    """The executor of a test marked ``airlock_no_enqueue``: the intent goes nowhere."""
    return None
