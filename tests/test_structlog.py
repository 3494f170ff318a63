"""The structlog bridge: one event per lifecycle moment, stable names and keys, no PII by default."""

from __future__ import annotations

import logging
import time

import pytest
import structlog
from structlog.testing import capture_logs

import airlock
from airlock import signals
from airlock.integrations import structlog as airlock_structlog

INTENT_KEYS = {"scope_id", "intent_id", "intent_name", "origin"}


@pytest.fixture(autouse=True)
def _fresh_structlog():
    structlog.reset_defaults()
    yield
    airlock_structlog.uninstrument()
    structlog.reset_defaults()


@pytest.fixture
def logs():
    airlock_structlog.instrument()
    with capture_logs() as captured:
        yield captured


def send_email(order_id: int, *, email: str = "") -> None:
    pass


def notify(order_id: int) -> None:
    pass


class Sent:
    message_id = "msg-1"


def events(captured: list[dict]) -> list[str]:
    return [entry["event"] for entry in captured]


def test_a_flushed_scope_logs_each_moment_with_stable_keys(logs):
    with airlock.scope() as scope:
        intent = airlock.enqueue(send_email, 7, email="ada@example.com", _origin="checkout")
    assert events(logs) == [
        "airlock.scope.entered",
        "airlock.intent.enqueued",
        "airlock.intent.dispatched",
        "airlock.scope.flushed",
    ]
    entered, enqueued, dispatched, flushed = logs
    assert entered == {
        "event": "airlock.scope.entered",
        "log_level": "debug",
        "scope_id": scope.id,
        "parent_scope_id": None,
    }
    assert enqueued == {
        "event": "airlock.intent.enqueued",
        "log_level": "debug",
        "scope_id": scope.id,
        "intent_id": intent.id,
        "intent_name": "send_email",
        "origin": "checkout",
    }
    assert dispatched["log_level"] == "info"
    assert dispatched["outcome"] == "dispatched"
    assert dispatched["deferral_ms"] >= 0
    assert dispatched["message_id"] is None  # the sync executor's result is no message id
    assert INTENT_KEYS <= dispatched.keys()
    assert flushed == {
        "event": "airlock.scope.flushed",
        "log_level": "info",
        "scope_id": scope.id,
        "outcome": "flushed",
        "intents": 1,
    }


def test_task_arguments_are_not_logged_by_default(logs):
    with airlock.scope():
        airlock.enqueue(send_email, 7, email="ada@example.com")
    assert "ada@example.com" not in repr(logs)
    assert all("args" not in entry and "kwargs" not in entry for entry in logs)


def test_task_arguments_are_logged_when_opted_in():
    airlock_structlog.instrument(include_args=True)
    with capture_logs() as logs, airlock.scope():
        airlock.enqueue(send_email, 7, email="ada@example.com")
    enqueued = next(entry for entry in logs if entry["event"] == "airlock.intent.enqueued")
    assert enqueued["args"] == (7,)
    assert enqueued["kwargs"] == {"email": "ada@example.com"}


def test_dropped_and_discarded_intents(logs):
    with airlock.scope(airlock.BlockTasks(["notify"])):
        airlock.enqueue(notify, 1)
    dropped = next(entry for entry in logs if entry["event"] == "airlock.intent.dropped")
    assert dropped["outcome"] == "dropped"
    assert dropped["policy"] == "BlockTasks"
    assert dropped["intent_name"] == "notify"
    logs.clear()
    with pytest.raises(ValueError), airlock.scope() as scope:
        airlock.enqueue(notify, 2)
        raise ValueError("payment declined")
    assert events(logs)[-1] == "airlock.scope.discarded"
    assert logs[-1] == {
        "event": "airlock.scope.discarded",
        "log_level": "info",
        "scope_id": scope.id,
        "outcome": "discarded",
        "intents": 1,
        "error": "ValueError: payment declined",
    }


def test_failed_dispatch_is_an_error_event_with_the_exception(logs):
    def broken(intent):
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError), airlock.scope(executor=broken):
        airlock.enqueue(send_email, 1)
    failed = next(entry for entry in logs if entry["event"] == "airlock.intent.dispatch_failed")
    assert failed["log_level"] == "error"
    assert failed["outcome"] == "failed"
    assert failed["error"] == "ConnectionError: broker down"
    assert isinstance(failed["exc_info"], ConnectionError)


def test_deferral_counts_the_time_held_before_release_and_message_id_comes_from_the_result(logs):
    held = []

    class LaterScope(airlock.Scope):
        def schedule_dispatch(self, intents):
            held.extend(intents)

    with airlock.scope(_cls=LaterScope, executor=lambda intent: Sent()) as scope:
        airlock.enqueue(send_email, 1)
    time.sleep(0.02)
    scope._release(held)
    dispatched = logs[-1]
    assert dispatched["event"] == "airlock.intent.dispatched"
    assert dispatched["deferral_ms"] >= 20
    assert dispatched["message_id"] == "msg-1"


def test_captured_intents_name_the_child_scope(logs):
    with airlock.scope() as outer:
        with airlock.scope() as inner:
            airlock.enqueue(notify, 1)
    captured = next(entry for entry in logs if entry["event"] == "airlock.intent.captured")
    assert captured["scope_id"] == outer.id
    assert captured["child_scope_id"] == inner.id
    entered = [entry for entry in logs if entry["event"] == "airlock.scope.entered"]
    assert entered[1]["parent_scope_id"] == outer.id


def test_every_signal_has_a_stable_event_name():
    assert set(airlock_structlog.EVENTS) == {s.name for s in signals.ALL} - {"intent_released"}
    assert all(name.startswith("airlock.") for name in airlock_structlog.EVENTS.values())


def test_unconfigured_structlog_falls_back_to_stdlib_logging(caplog, capsys):
    assert not structlog.is_configured()
    airlock_structlog.instrument()
    with caplog.at_level(logging.DEBUG, logger="airlock"), airlock.scope() as scope:
        intent = airlock.enqueue(send_email, 7, email="ada@example.com")
    records = [record for record in caplog.records if record.name == "airlock"]
    assert [record.airlock["event"] for record in records] == [
        "airlock.scope.entered",
        "airlock.intent.enqueued",
        "airlock.intent.dispatched",
        "airlock.scope.flushed",
    ]
    enqueued = records[1]
    assert enqueued.levelno == logging.DEBUG
    assert enqueued.airlock["intent_id"] == intent.id
    assert enqueued.getMessage() == (
        f"airlock.intent.enqueued scope_id={scope.id!r} intent_id={intent.id!r} intent_name='send_email' origin=None"
    )
    assert records[2].levelno == logging.INFO
    assert "ada@example.com" not in caplog.text
    assert capsys.readouterr() == ("", "")  # a library never prints


def test_stdlib_fallback_attaches_the_exception_to_failed_dispatches(caplog):
    airlock_structlog.instrument()

    def broken(intent):
        raise ConnectionError("broker down")

    with caplog.at_level(logging.INFO, logger="airlock"):
        with pytest.raises(ConnectionError), airlock.scope(executor=broken):
            airlock.enqueue(send_email, 1)
    failed = next(r for r in caplog.records if r.airlock["event"] == "airlock.intent.dispatch_failed")
    assert failed.levelno == logging.ERROR
    assert failed.exc_info[0] is ConnectionError
    assert "exc_info" not in failed.airlock


def test_stdlib_fallback_respects_the_level_and_configures_nothing(caplog):
    handlers = list(logging.getLogger("airlock").handlers)
    airlock_structlog.instrument()
    with caplog.at_level(logging.WARNING, logger="airlock"), airlock.scope():
        airlock.enqueue(send_email, 1)
    assert [r for r in caplog.records if r.name == "airlock"] == []
    assert logging.getLogger("airlock").handlers == handlers


def test_an_explicit_logger_wins():
    written = []

    class Recorder:
        def __getattr__(self, level):
            return lambda event, **fields: written.append((level, event))

    airlock_structlog.instrument(logger=Recorder())
    with airlock.scope():
        airlock.enqueue(notify, 1)
    assert ("debug", "airlock.intent.enqueued") in written
    assert ("info", "airlock.scope.flushed") in written


def test_instrument_twice_keeps_one_subscriber_and_uninstrument_undoes_it():
    before = {signal: len(signal.receivers) for signal in signals.ALL}
    structlog.configure(processors=[])
    airlock_structlog.instrument()
    airlock_structlog.instrument()
    assert airlock_structlog.is_instrumented()
    assert all(len(signal.receivers) == before[signal] + 1 for signal in signals.ALL)
    airlock_structlog.uninstrument()
    assert not airlock_structlog.is_instrumented()
    assert {signal: len(signal.receivers) for signal in signals.ALL} == before
    with capture_logs() as logs, airlock.scope():
        airlock.enqueue(notify, 1)
    assert logs == []
    airlock_structlog.uninstrument()  # harmless when off


def test_per_intent_receivers_wait_until_events_would_be_written(caplog):
    """Nothing configured: one cheap receiver per scope, none per intent, until logging is on."""
    hot = {"intent_enqueued", "intent_released", "intent_dispatched"}
    before = {signal: len(signal.receivers) for signal in signals.ALL}
    caplog.set_level(logging.WARNING, logger="airlock")
    airlock_structlog.instrument()
    with airlock.scope():
        airlock.enqueue(notify, 1)
    assert {s.name for s in signals.ALL if len(s.receivers) == before[s]} == hot
    caplog.set_level(logging.INFO, logger="airlock")
    with airlock.scope():
        airlock.enqueue(notify, 2)
    assert all(len(s.receivers) == before[s] + 1 for s in signals.ALL)
    assert [r.airlock["event"] for r in caplog.records] == ["airlock.intent.dispatched", "airlock.scope.flushed"]


def test_a_logger_filtering_at_info_gets_no_debug_events_and_still_the_info_ones():
    structlog.configure(
        processors=[structlog.testing.LogCapture()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    capture = structlog.get_config()["processors"][0]
    airlock_structlog.instrument()
    with airlock.scope():
        airlock.enqueue(notify, 1)
    assert events(capture.entries) == ["airlock.intent.dispatched", "airlock.scope.flushed"]


def test_a_generic_bound_logger_is_not_asked_a_method_it_does_not_define():
    structlog.configure(
        processors=[structlog.testing.LogCapture()],
        wrapper_class=structlog.BoundLogger,
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    capture = structlog.get_config()["processors"][0]
    airlock_structlog.instrument()
    with airlock.scope():
        airlock.enqueue(notify, 1)
    assert "airlock.intent.enqueued" in events(capture.entries)
    assert all(entry["log_level"] in {"debug", "info"} for entry in capture.entries)
