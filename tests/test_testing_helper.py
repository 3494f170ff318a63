"""airlock.testing.capture(): intents and events without a broker."""

from __future__ import annotations

import airlock
from airlock import signals
from airlock.testing import capture


def test_capture_records_without_dispatching_by_default():
    ran = []
    with capture() as captured, airlock.scope():
        airlock.enqueue(ran.append, 1)
    assert ran == []
    assert [i.args for i in captured.dispatched] == [(1,)]
    assert [i.args for i in captured.enqueued] == [(1,)]


def test_capture_can_dispatch_for_real():
    ran = []
    with capture(dispatch=True) as captured, airlock.scope():
        airlock.enqueue(ran.append, 1)
    assert ran == [1] and len(captured.dispatched) == 1


def test_capture_overrides_even_an_explicit_executor():
    def broker_executor(intent):
        raise AssertionError("must not reach a broker")

    with capture() as captured, airlock.scope(executor=broker_executor):
        airlock.enqueue(print, 1)
    assert len(captured.dispatched) == 1


def test_capture_disconnects_and_restores_afterwards():
    ran = []
    with capture():
        pass
    assert all(not s.receivers for s in signals.ALL)
    with airlock.scope():
        airlock.enqueue(ran.append, 1)
    assert ran == [1]


def test_capture_lists_discarded_intents():
    with capture() as captured:
        try:
            with airlock.scope():
                airlock.enqueue(print, "x")
                raise LookupError
        except LookupError:
            pass
    assert [i.args for i in captured.discarded] == [("x",)]
