"""The event bus: every signal, its kwargs, its order, and observers that misbehave."""

from __future__ import annotations

import gc
import logging

import blinker
import pytest

import airlock
from airlock import DropAll, PolicyViolation, signals
from airlock.testing import capture


def task(n=0):
    return f"ran {n}"


def failing(n=0):
    raise RuntimeError(f"failed {n}")


def test_every_signal_is_a_blinker_signal_with_a_doc():
    for signal in signals.ALL:
        assert isinstance(signal, blinker.Signal)
        assert signal.__doc__ and len(signal.__doc__) > 40
    assert {s.name for s in signals.ALL} >= {
        "scope_entered",
        "intent_enqueued",
        "intent_captured",
        "intent_dropped",
        "scope_flushed",
        "scope_discarded",
        "intent_dispatched",
        "dispatch_failed",
    }


def test_life_of_a_flushed_scope_in_order_with_kwargs():
    with capture(dispatch=True) as captured, airlock.scope() as scope:
        first = airlock.enqueue(task, 1)
        second = airlock.enqueue(task, 2)
    assert captured.names == [
        "scope_entered",
        "intent_enqueued",
        "intent_enqueued",
        "intent_released",
        "intent_dispatched",
        "intent_released",
        "intent_dispatched",
        "scope_flushed",
    ]
    assert all(event.sender is scope for event in captured.events)
    dispatched = captured.of("intent_dispatched")
    assert [e.kwargs for e in dispatched] == [
        {"intent": first, "result": "ran 1"},
        {"intent": second, "result": "ran 2"},
    ]
    assert captured.of("scope_flushed")[0].kwargs == {"intents": [first, second]}


def test_discard_sends_scope_discarded_with_intents_and_error():
    error = ValueError("nope")
    with capture() as captured, pytest.raises(ValueError), airlock.scope() as scope:
        intent = airlock.enqueue(task, 1)
        raise error
    event = captured.of("scope_discarded")[0]
    assert event.sender is scope
    assert event.kwargs == {"intents": [intent], "error": error}
    assert "intent_dispatched" not in captured.names


def test_capture_sends_intent_captured_with_child():
    with capture() as captured, airlock.scope() as outer:
        with airlock.scope() as inner:
            intent = airlock.enqueue(task)
    event = captured.of("intent_captured")[0]
    assert event.sender is outer
    assert event.kwargs == {"intent": intent, "child": inner}
    assert captured.of("scope_flushed")[0].kwargs == {"intents": []}  # the inner one
    assert captured.of("scope_flushed")[1].kwargs == {"intents": [intent]}


def test_dispatch_failed_carries_the_error():
    with capture(dispatch=True) as captured, pytest.raises(RuntimeError), airlock.scope():
        intent = airlock.enqueue(failing, 5)
    event = captured.of("dispatch_failed")[0]
    assert event.kwargs["intent"] is intent
    assert str(event.kwargs["error"]) == "failed 5"
    assert captured.names.index("intent_enqueued") < captured.names.index("dispatch_failed")


def test_intent_dropped_follows_intent_enqueued():
    with capture() as captured, airlock.scope(DropAll()):
        airlock.enqueue(task)
    assert captured.names.index("intent_enqueued") < captured.names.index("intent_dropped")


def test_receivers_run_in_connection_order():
    seen = []
    receivers = [lambda sender, i=i, **kw: seen.append(i) for i in range(20)]
    for receiver in receivers:
        signals.intent_enqueued.connect(receiver, weak=False)
    with airlock.scope(DropAll()):
        airlock.enqueue(task)
    assert seen == list(range(20))


def test_send_returns_results_like_blinker():
    def answer(sender, **kwargs):
        return 42

    signals.scope_entered.connect(answer)
    assert signals.scope_entered.send("sender") == [(answer, 42)]


def test_a_user_receiver_sees_the_same_intent_objects_as_the_executor():
    seen = []
    executed = []

    def executor(intent):
        executed.append(intent)

    def observer(sender, intent, **kwargs):
        seen.append(intent)

    signals.intent_released.connect(observer)
    with airlock.scope(executor=executor):
        airlock.enqueue(task, 1)
        airlock.enqueue(task, 2)
    assert seen == executed and len(seen) == 2
    assert all(a is b for a, b in zip(seen, executed, strict=True))


def test_raising_observer_never_loses_or_reorders_intents(caplog):
    ran = []

    def broken(sender, **kwargs):
        raise RuntimeError("observer bug")

    for signal in signals.ALL:
        signal.connect(broken)
    with caplog.at_level(logging.ERROR, logger="airlock"), airlock.scope():
        for i in range(5):
            airlock.enqueue(ran.append, i)
    assert ran == [0, 1, 2, 3, 4]
    assert "observer bug" in caplog.text
    assert any(r.exc_info for r in caplog.records)


def test_a_receiver_can_veto_an_enqueue_with_policy_violation():
    def veto(sender, intent, **kwargs):
        if intent.name == "failing":
            raise PolicyViolation("not here")

    signals.intent_enqueued.connect(veto)
    with airlock.scope() as scope:
        airlock.enqueue(task)
        with pytest.raises(PolicyViolation, match="not here"):
            airlock.enqueue(failing)
        assert [i.name for i in scope.intents] == ["task"]


def test_muting_a_signal_silences_observers_but_not_dispatch():
    seen, ran = [], []
    signals.intent_released.connect(lambda sender, **kw: seen.append(kw), weak=False)
    with signals.intent_released.muted(), airlock.scope():
        airlock.enqueue(ran.append, 1)
    assert ran == [1] and seen == []


def test_connected_to_is_temporary():
    seen = []

    def receiver(sender, **kwargs):
        seen.append(sender)

    with signals.scope_entered.connected_to(receiver), airlock.scope():
        pass
    with airlock.scope():
        pass
    assert len(seen) == 1


def test_weak_receiver_goes_away_with_its_owner():
    seen = []

    class Owner:
        def on_enqueued(self, sender, **kwargs):
            seen.append(kwargs["intent"])

    owner = Owner()
    signals.intent_enqueued.connect(owner.on_enqueued)
    with airlock.scope(DropAll()):
        airlock.enqueue(task)
    del owner
    gc.collect()
    with airlock.scope(DropAll()):
        airlock.enqueue(task)
    assert len(seen) == 1
    assert not signals.intent_enqueued.receivers


def test_sender_specific_receiver_only_hears_its_scope():
    seen = []
    watched = airlock.scope(DropAll())
    signals.intent_enqueued.connect(lambda sender, **kw: seen.append(sender), sender=watched, weak=False)
    with airlock.scope(DropAll()):
        airlock.enqueue(task)
    with watched:
        airlock.enqueue(task)
    assert seen == [watched]


def test_async_receivers_are_refused_with_a_clear_error():
    async def receiver(sender, **kwargs):
        pass

    with pytest.raises(TypeError, match="async function"):
        signals.intent_dispatched.connect(receiver)


def test_signals_with_no_observers_report_no_receivers():
    assert all(not signal.receivers for signal in signals.ALL)
