"""A flush never loses an intent silently: failures, interrupts, policy errors, and the race at exit."""

from __future__ import annotations

import contextvars
import logging
import threading
import time

import pytest

import airlock
from airlock import DispatchError, Scope, ScopeStateError, signals


def noop(n):
    return n


class Interrupting:
    """An executor that sends, until the intent numbered ``at``, where it raises ``error``."""

    def __init__(self, at, error):
        self.at, self.error, self.sent = at, error, []

    def __call__(self, intent):
        if intent.args[0] == self.at:
            raise self.error
        self.sent.append(intent.args[0])


@pytest.fixture(params=["unobserved", "observed"])
def observed(request):
    """Run each test with nobody listening (the direct path) and with a receiver on every signal."""
    if request.param == "observed":
        for signal in signals.ALL:
            signal.connect(_noop_receiver)
    return request.param


def _noop_receiver(sender, **kwargs):
    pass


def test_every_failure_is_collected_into_one_dispatch_error(observed):
    def flaky(n):
        if n % 3 == 0:
            raise ConnectionError(f"broker gone for {n}")
        return n

    failed = []
    with signals.dispatch_failed.connected_to(lambda sender, **kw: failed.append(kw["intent"])):
        with pytest.raises(DispatchError) as caught, airlock.scope():
            intents = [airlock.enqueue(flaky, n) for n in range(10)]
    error = caught.value
    assert [intent for intent, _ in error.failures] == [intents[0], intents[3], intents[6], intents[9]]
    assert failed == [intents[0], intents[3], intents[6], intents[9]]
    assert isinstance(error, ConnectionError) and isinstance(error, airlock.AirlockError)
    for n in (0, 3, 6, 9):
        assert f"flaky({n}): ConnectionError: broker gone for {n}" in str(error)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(3)], ids=["KeyboardInterrupt", "SystemExit"])
def test_an_interrupt_reports_every_intent_it_left_untried(observed, interrupt):
    executor = Interrupting(at=3, error=interrupt)
    failed = []
    with signals.dispatch_failed.connected_to(lambda sender, **kw: failed.append((kw["intent"].args[0], kw["error"]))):
        with pytest.raises(type(interrupt)) as caught, airlock.scope(executor=executor):
            for n in range(100):
                airlock.enqueue(noop, n)
    assert executor.sent == [0, 1, 2]
    assert [n for n, _ in failed] == list(range(3, 100)), "each untried intent is reported, in order"
    assert all(error is interrupt for _, error in failed)
    assert [intent.args[0] for intent, _ in caught.value.airlock_failures] == list(range(3, 100))
    assert "97 intent(s)" in "".join(caught.value.__notes__)


def test_an_interrupt_from_an_observer_after_the_send_does_not_report_the_sent_intent():
    sent = []

    def interrupt_after_second(sender, intent, result):
        if intent.args[0] == 1:
            raise KeyboardInterrupt

    failed = []
    signals.intent_dispatched.connect(interrupt_after_second)
    signals.dispatch_failed.connect(lambda sender, **kw: failed.append(kw["intent"].args[0]), weak=False)
    with pytest.raises(KeyboardInterrupt), airlock.scope(executor=lambda intent: sent.append(intent.args[0])):
        for n in range(5):
            airlock.enqueue(noop, n)
    assert sent == [0, 1]
    assert failed == [2, 3, 4]


def test_report_mode_logs_and_signals_but_does_not_raise(caplog, observed):
    def broken(n):
        raise ValueError(f"no {n}")

    failed = []
    with signals.dispatch_failed.connected_to(lambda sender, **kw: failed.append(kw["intent"])):
        with caplog.at_level(logging.ERROR, logger="airlock"):
            with airlock.scope(dispatch_errors="report") as scope:
                airlock.enqueue(broken, 1)
                airlock.enqueue(noop, 2)
    assert scope.is_flushed
    assert [intent.args for intent in failed] == [(1,)]
    assert "broken(1) could not be dispatched" in caplog.text and "no 1" in caplog.text


def test_report_mode_from_configure():
    airlock.configure(dispatch_errors="report")
    with airlock.scope():
        airlock.enqueue(lambda: 1 / 0)
    assert airlock.get_configuration()["dispatch_errors"] == "report"
    with pytest.raises(TypeError, match="'raise' or 'report'"):
        airlock.configure(dispatch_errors="ignore")
    with pytest.raises(TypeError, match="'raise' or 'report'"):
        Scope(dispatch_errors="quiet")


class Raising:
    def __init__(self, error):
        self.error = error

    def on_enqueue(self, intent):
        pass

    def allows(self, intent):
        raise self.error


def test_a_policy_that_raises_at_flush_discards_the_scope_and_the_caller_gets_the_error():
    discarded = []
    sent = []
    with signals.scope_discarded.connected_to(lambda sender, **kw: discarded.append(kw)):
        with pytest.raises(LookupError, match="rules table missing"):
            with airlock.scope(Raising(LookupError("rules table missing")), executor=sent.append) as scope:
                first = airlock.enqueue(noop, 1)
                second = airlock.enqueue(noop, 2)
    assert sent == []
    assert scope.is_discarded
    assert discarded[0]["intents"] == [first, second]
    assert isinstance(discarded[0]["error"], LookupError)


def test_a_local_policy_that_raises_at_flush_discards_too():
    with pytest.raises(RuntimeError), airlock.scope() as scope:
        with airlock.policy(Raising(RuntimeError("boom"))):
            airlock.enqueue(noop, 1)
    assert scope.is_discarded


def _slow_observer(sender, intent):
    time.sleep(0.0002)  # lets the owner thread run between the enqueue's checks and its append


@pytest.mark.parametrize("observer", ["slow-observer", "no-observer"])
@pytest.mark.parametrize("ending", ["flush", "discard"])
def test_no_enqueue_is_lost_in_the_race_with_the_exit(ending, observer):
    """Threads holding a copy of the context enqueue while the owner leaves the with-block.

    Every enqueue either raises ScopeStateError, or its intent is part of what the
    flush dispatched (or the discard dropped). Nothing is returned and then lost.
    """
    rounds = 2000
    if observer == "slow-observer":
        rounds = 300
        signals.intent_enqueued.connect(_slow_observer)
    lost = 0
    late = 0
    for _ in range(rounds):
        handled: list[object] = []
        scope = Scope(executor=handled.append).enter()
        contexts = [contextvars.copy_context() for _ in range(2)]  # as a thread pool would carry it
        start = threading.Barrier(3)
        returned: list[object] = []

        def enqueue_racing(context, start=start, returned=returned):
            start.wait()
            for n in range(3):
                try:
                    returned.append(context.run(airlock.enqueue, noop, n))
                except ScopeStateError:
                    pass

        threads = [threading.Thread(target=enqueue_racing, args=(context,)) for context in contexts]
        for thread in threads:
            thread.start()
        start.wait()
        while not returned and any(thread.is_alive() for thread in threads):
            time.sleep(0)  # leave once the first enqueue is in: the others race the exit
        scope.exit()
        outcome = scope.flush() if ending == "flush" else scope.discard()
        for thread in threads:
            thread.join()
        if ending == "flush":
            assert outcome == handled
        settled = {id(intent) for intent in outcome}
        lost += sum(1 for intent in returned if id(intent) not in settled)
        late += len(returned) - len(outcome) if ending == "flush" else 0
        assert scope.intents == outcome
    assert lost == 0
