"""DjangoScope reports the intents whose transaction rolled back before it flushed.

Runs on PostgreSQL (two databases on one server) and, with AIRLOCK_TEST_DB=sqlite, on SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from django.db import transaction
from structlog.testing import capture_logs

import airlock
from airlock import BlockTasks, Intent, Scope
from airlock.integrations import structlog as airlock_structlog
from airlock.integrations.django import DjangoScope, TransactionRolledBack
from airlock.integrations.opentelemetry._instrumentor import SCOPE_SPAN
from airlock.testing import capture
from airlock.typing import Policy
from tests.djangoproject.checks import require_database
from tests.otel_support import Telemetry, instrumented

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

LOGGER = "airlock.integrations.django"


class Boom(Exception):
    pass


def a() -> None: ...
def b() -> None: ...
def c() -> None: ...
def d() -> None: ...
def e() -> None: ...


@pytest.fixture
def sent() -> list[str]:
    names: list[str] = []
    airlock.configure(scope_cls=DjangoScope, executor=lambda intent: names.append(intent.name))
    return names


def names(intents: list[Intent]) -> list[str]:
    return [intent.name for intent in intents]


def enqueue_and_roll_back(*tasks, using: str = "default") -> None:
    """Enqueue ``tasks`` inside an atomic() block that rolls back."""
    with pytest.raises(Boom), transaction.atomic(using=using):
        for task in tasks:
            airlock.enqueue(task)
        raise Boom


def drops(captured) -> list[tuple[str, Policy]]:
    return [(event.kwargs["intent"].name, event.kwargs["policy"]) for event in captured.of("intent_dropped")]


def rollback_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


# -- the policy-like reason ----------------------------------------------------------


def test_transaction_rolled_back_is_a_policy_that_allows_nothing():
    reason = TransactionRolledBack("other")
    assert isinstance(reason, Policy)
    assert reason.allows(Intent(a)) is False
    assert reason.on_enqueue(Intent(a)) is None
    assert reason.using == "other"
    assert repr(reason) == "TransactionRolledBack(using='other')"


# -- rolled back before the flush: dropped, reported, logged ----------------------------


def test_savepoint_rolled_back_before_flush_is_dropped_reported_and_logged(sent, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with capture(dispatch=True) as captured, transaction.atomic():
        scope = airlock.scope().enter()
        airlock.enqueue(a)
        enqueue_and_roll_back(b)
        scope.exit()
        flushed = scope.flush()
        assert names(flushed) == ["a"]
        [event] = captured.of("scope_flushed")
        assert names(event.kwargs["intents"]) == ["a"]
    assert sent == ["a"]
    assert names(captured.dropped) == ["b"]
    [(name, reason)] = drops(captured)
    assert name == "b"
    assert type(reason) is TransactionRolledBack and reason.using == "default"
    assert captured.of("intent_dropped")[0].sender is scope
    [message] = rollback_logs(caplog)
    assert "b()" in message and "'default'" in message and "rolled back" in message


def test_a_dropped_intent_is_reported_before_the_scope_flushed_event(sent):
    with capture(dispatch=True) as captured, airlock.scope():
        enqueue_and_roll_back(a)
    assert captured.names == ["scope_entered", "intent_enqueued", "intent_dropped", "scope_flushed"]


def test_whole_transaction_rolled_back_before_flush_reports_every_intent(sent, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with capture(dispatch=True) as captured:
        with airlock.scope() as scope:
            with pytest.raises(Boom), transaction.atomic():
                airlock.enqueue(a)
                with transaction.atomic():  # released, then lost with the outer rollback
                    airlock.enqueue(b)
                airlock.enqueue(c)
                raise Boom
    assert scope.is_flushed
    assert sent == []
    assert names(captured.dropped) == ["a", "b", "c"]
    assert {type(reason) for _, reason in drops(captured)} == {TransactionRolledBack}
    assert captured.of("scope_flushed")[0].kwargs["intents"] == []
    assert len(rollback_logs(caplog)) == 3


def test_kept_intents_keep_their_order_around_rolled_back_ones(sent):
    with capture(dispatch=True) as captured, transaction.atomic():
        scope = airlock.scope().enter()
        airlock.enqueue(a)
        enqueue_and_roll_back(b)
        airlock.enqueue(c)
        with transaction.atomic():
            enqueue_and_roll_back(d)  # a savepoint rolled back inside a released one
        airlock.enqueue(e)
        scope.exit()
        assert names(scope.flush()) == ["a", "c", "e"]
        assert sent == []  # the rest still waits for the commit
    assert sent == ["a", "c", "e"]
    assert names(captured.dropped) == ["b", "d"]


def test_rolled_back_and_policy_refused_are_reported_in_enqueue_order(sent):
    asked: list[str] = []

    class Recording:
        """BlockTasks({"a", "d"}) that remembers what it was asked."""

        def on_enqueue(self, intent: Intent) -> None: ...

        def allows(self, intent: Intent) -> bool:
            asked.append(intent.name)
            return BlockTasks({"a", "d"}).allows(intent)

    with capture(dispatch=True) as captured, transaction.atomic():
        with airlock.scope(Recording()):
            airlock.enqueue(a)
            enqueue_and_roll_back(b)
            airlock.enqueue(c)
            airlock.enqueue(d)
            enqueue_and_roll_back(e)
    assert sent == ["c"]
    assert [(name, type(reason).__name__) for name, reason in drops(captured)] == [
        ("a", "Recording"),
        ("b", "TransactionRolledBack"),
        ("d", "Recording"),
        ("e", "TransactionRolledBack"),
    ]
    assert asked == ["a", "c", "d"], "no policy is asked about an intent that cannot go"


def test_the_reason_names_the_alias_the_intent_waited_on(sent, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with capture(dispatch=True) as captured, airlock.scope(using="other"):
        enqueue_and_roll_back(a, using="other")
    [(_, reason)] = drops(captured)
    assert reason.using == "other"
    [message] = rollback_logs(caplog)
    assert "'other'" in message


# -- nested scopes --------------------------------------------------------------------


def test_captured_intents_rolled_back_after_the_child_flushed_are_reported_by_the_ancestor(sent, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with capture(dispatch=True) as captured, transaction.atomic():
        with airlock.scope() as outer:
            airlock.enqueue(a)
            with pytest.raises(Boom), transaction.atomic():
                with airlock.scope() as inner:
                    airlock.enqueue(b)
                assert names(outer.captured_intents) == ["b"]  # still waiting when taken
                raise Boom
            airlock.enqueue(c)
    assert sent == ["a", "c"]
    [event] = captured.of("intent_dropped")
    assert event.sender is outer and event.kwargs["intent"].name == "b"
    assert type(event.kwargs["policy"]) is TransactionRolledBack
    assert [event.sender for event in captured.of("scope_flushed")] == [inner, outer]
    assert names(captured.of("scope_flushed")[1].kwargs["intents"]) == ["a", "c"]
    assert len(rollback_logs(caplog)) == 1


def test_a_child_reports_what_rolled_back_before_it_flushed_and_hands_up_only_the_rest(sent):
    with capture(dispatch=True) as captured, transaction.atomic():
        with airlock.scope() as outer:
            with airlock.scope() as inner:
                airlock.enqueue(a)
                enqueue_and_roll_back(b)
            assert names(outer.captured_intents) == ["a"]
    assert sent == ["a"]
    [event] = captured.of("intent_dropped")
    assert event.sender is inner and event.kwargs["intent"].name == "b"
    assert [event.kwargs["intent"].name for event in captured.of("intent_captured")] == ["a"]


def test_a_plain_scope_around_never_sends_what_rolled_back_before_the_child_flushed(sent):
    with capture(dispatch=True) as captured, airlock.scope(_cls=Scope):
        with airlock.scope():  # DjangoScope, the configured class
            enqueue_and_roll_back(a)
            airlock.enqueue(b)
    assert sent == ["b"]
    assert names(captured.dropped) == ["a"]


# -- what does not change ----------------------------------------------------------------


@pytest.mark.parametrize("committed", [True, False], ids=["committed-before-flush", "waiting-at-flush"])
def test_committed_and_waiting_intents_are_not_reported(sent, caplog, committed):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with capture(dispatch=True) as captured:
        if committed:
            with airlock.scope():
                with transaction.atomic():
                    airlock.enqueue(a)
        else:
            with transaction.atomic(), airlock.scope():
                airlock.enqueue(a)
    assert sent == ["a"]
    assert captured.dropped == []
    assert rollback_logs(caplog) == []


def test_a_rollback_after_the_flush_cannot_be_reported(sent):
    """The documented limit: Django has no rollback hook, so the intent just never goes."""
    with capture(dispatch=True) as captured:
        with pytest.raises(Boom), transaction.atomic():
            with airlock.scope():
                airlock.enqueue(a)
            raise Boom
    assert sent == []
    assert captured.dropped == []
    assert names(captured.of("scope_flushed")[0].kwargs["intents"]) == ["a"]


# -- observers: structlog and OpenTelemetry ------------------------------------------------


@pytest.fixture
def structlog_events() -> Iterator[list[dict]]:
    structlog.reset_defaults()
    airlock_structlog.instrument()
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        airlock_structlog.uninstrument()
        structlog.reset_defaults()


def test_structlog_logs_the_drop_with_its_reason(sent, structlog_events):
    with airlock.scope() as scope:
        enqueue_and_roll_back(a)
    [dropped] = [entry for entry in structlog_events if entry["event"] == "airlock.intent.dropped"]
    assert dropped["policy"] == "TransactionRolledBack"
    assert dropped["outcome"] == "dropped"
    assert dropped["intent_name"] == "a" and dropped["scope_id"] == scope.id
    assert dropped["log_level"] == "info"


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with instrumented() as telemetry:
        yield telemetry


def test_opentelemetry_records_the_drop_on_the_scope_span_and_in_the_metric(sent, otel):
    with airlock.scope():
        airlock.enqueue(b)
        enqueue_and_roll_back(a)
    scope_span = otel.one(SCOPE_SPAN)
    [drop] = [event for event in scope_span.events if event.name == "airlock.drop"]
    assert drop.attributes["airlock.policy"] == "TransactionRolledBack"
    assert drop.attributes["airlock.intent.name"] == "a"
    assert scope_span.attributes["airlock.scope.intents.dropped"] == 1
    assert scope_span.attributes["airlock.scope.intents.flushed"] == 1
    [point] = otel.metric_points()["airlock.intents.dropped"]
    assert point.value == 1 and point.attributes["airlock.policy"] == "TransactionRolledBack"
