"""Celery end to end: real brokers (Redis, RabbitMQ), a real worker, real messages."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import airlock
from airlock.integrations.celery import CeleryShimWarning, shim
from airlock.integrations.executors.celery import celery_executor
from airlock.signals import intent_dispatched
from tests.celery_support import (
    IDLE_QUEUE,
    JOURNAL,
    ROUTED_QUEUE,
    Broker,
    new_token,
    running_worker,
)

pytestmark = [
    pytest.mark.one_lane,  # a real broker and worker: the same Celery on every lane
    pytest.mark.filterwarnings(
        # kombu's RabbitMQ transport still calls datetime.utcnow() on this Python.
        "ignore:datetime.datetime.utcnow:DeprecationWarning",
    ),
]


@pytest.fixture(scope="module", params=["redis", "rabbitmq"], ids=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    with running_worker(request.param) as running:
        yield running


def test_flushed_scope_runs_each_task_once_with_its_arguments(broker: Broker) -> None:
    token = new_token()
    dispatched = []
    intent_dispatched.connect(lambda scope, intent, result: dispatched.append(result), weak=False)
    with airlock.scope(executor=celery_executor):
        airlock.enqueue(broker.record, token, 1, colour="red")
        airlock.enqueue(broker.record, token, 2, colour="blue")
    broker.drain()
    runs = JOURNAL.of(token)
    assert [(run["args"], run["kwargs"]) for run in runs] == [((1,), {"colour": "red"}), ((2,), {"colour": "blue"})]
    assert [result.id for result in dispatched] == [run["id"] for run in runs]


def test_countdown_really_delays_the_run(broker: Broker) -> None:
    token = new_token()
    with airlock.scope(executor=celery_executor):
        airlock.enqueue(broker.record, token, _dispatch_options={"countdown": 1.5})
    published = time.time()
    (run,) = JOURNAL.wait_for(token, 1)
    assert run["at"] - published >= 1.2


def test_queue_option_routes_the_message(broker: Broker) -> None:
    token = new_token()
    with airlock.scope(executor=celery_executor):
        airlock.enqueue(broker.record, token, "routed", _dispatch_options={"queue": ROUTED_QUEUE})
        airlock.enqueue(broker.record, token, "idle", _dispatch_options={"queue": IDLE_QUEUE})
    (run,) = JOURNAL.wait_for(token, 1)
    assert run["args"] == ("routed",)
    assert run["routing_key"] == ROUTED_QUEUE
    # The worker does not consume the idle queue: its message waits in the broker.
    broker.drain()
    assert len(JOURNAL.of(token)) == 1
    assert broker.depth(IDLE_QUEUE) == 1
    broker.purge(IDLE_QUEUE)


def test_discarded_scope_never_reaches_the_broker(broker: Broker) -> None:
    token = new_token()
    with pytest.raises(RuntimeError), airlock.scope(executor=celery_executor):
        airlock.enqueue(broker.record, token, _dispatch_options={"queue": IDLE_QUEUE})
        raise RuntimeError("the unit of work failed")
    assert broker.depth(IDLE_QUEUE) == 0
    # The same probe sees a message that was sent, so the zero above means something.
    with airlock.scope(executor=celery_executor):
        airlock.enqueue(broker.record, token, _dispatch_options={"queue": IDLE_QUEUE})
    assert broker.depth(IDLE_QUEUE) == 1
    broker.purge(IDLE_QUEUE)


def test_order_is_kept_within_one_flush(broker: Broker) -> None:
    token = new_token()
    with airlock.scope(executor=celery_executor):
        for number in range(25):
            airlock.enqueue(broker.record, token, number)
    runs = JOURNAL.wait_for(token, 25)
    assert [run["args"][0] for run in runs] == list(range(25))


def test_airlock_task_sends_follow_ups_only_after_its_body_succeeded(broker: Broker) -> None:
    """Nothing configured: the run's own queue, Celery, sends the follow-up as a message of its own."""
    token = new_token()
    result = broker.parent.delay(token, "ok")
    (child,) = JOURNAL.wait_for(token, 1)
    (done,) = JOURNAL.of(token, "body_done")
    (published,) = [p for p in JOURNAL.of(token, "published") if p["task"] == broker.record.name]
    assert published["at"] >= done["at"]
    assert child["args"] == ("child", 0)
    # Its own message, run by the worker: an inline call would have no id of its own.
    assert child["id"] == published["id"] and child["id"] not in (None, result.id)
    assert child["parent_id"] == result.id  # published from inside the parent's run
    broker.drain()
    assert len(JOURNAL.of(token)) == 1


def test_airlock_task_discards_follow_ups_when_it_raises(broker: Broker) -> None:
    token = new_token()
    broker.parent.delay(token, "raise")
    JOURNAL.wait_for(token, 1, "body_done")
    broker.drain()
    assert JOURNAL.of(token) == []
    assert [p["task"] for p in JOURNAL.of(token, "published")] == [broker.parent.name]


@pytest.mark.parametrize("mode", ["retry", "retry_nothrow"], ids=["raise-retry", "retry-throw-false"])
def test_airlock_task_discards_follow_ups_of_a_run_that_retries(broker: Broker, mode: str) -> None:
    token = new_token()
    broker.parent.delay(token, mode)
    (child,) = JOURNAL.wait_for(token, 1)
    assert child["args"] == ("child", 1)  # only the second, successful attempt's
    broker.drain()
    assert len(JOURNAL.of(token)) == 1


def test_trace_context_travels_in_the_message_headers(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager

    from airlock import _context

    continued = []

    @contextmanager
    def continue_trace(carrier, *, name, system):
        continued.append((carrier.get("traceparent"), name, system))
        yield

    monkeypatch.setattr(_context.hooks, "inject_trace", lambda carrier: carrier.update(traceparent="00-abc-01"))
    monkeypatch.setattr(_context.hooks, "continue_trace", continue_trace)
    token = new_token()
    with airlock.scope(executor=celery_executor):
        airlock.enqueue(broker.parent, token, "ok", _dispatch_options={"headers": {"tenant": "t1"}})
    JOURNAL.wait_for(token, 1, "body_done")
    (done,) = JOURNAL.of(token, "body_done")
    assert done["headers"]["traceparent"] == "00-abc-01"
    assert done["headers"]["tenant"] == "t1"  # the user's headers are kept
    assert continued[0] == ("00-abc-01", "airlock_test.parent", "celery")
    broker.drain()


def test_shim_holds_delay_until_the_scope_flushes(broker: Broker) -> None:
    token = new_token()
    with shim(), airlock.scope(executor=celery_executor):
        with pytest.warns(CeleryShimWarning, match=r"airlock\.enqueue\(record, "):
            promised = broker.record.apply_async((token, "shimmed"), queue=IDLE_QUEUE)
        assert broker.depth(IDLE_QUEUE) == 0
    assert broker.depth(IDLE_QUEUE) == 1
    broker.purge(IDLE_QUEUE)
    with shim(), airlock.scope(executor=celery_executor):
        with pytest.warns(CeleryShimWarning):
            promised = broker.record.delay(token, "delayed")
    (run,) = JOURNAL.wait_for(token, 1)
    assert run["id"] == promised.id  # the AsyncResult handed out at the call is the real one


def test_shim_leaves_calls_outside_a_scope_alone(broker: Broker) -> None:
    token = new_token()
    with shim():
        broker.record.apply_async((token,), queue=IDLE_QUEUE)  # no warning: filterwarnings=error
    assert broker.depth(IDLE_QUEUE) == 1
    broker.purge(IDLE_QUEUE)


def test_retry_still_resends_the_task_with_the_shim_on(broker: Broker) -> None:
    airlock.configure(executor=celery_executor)
    token = new_token()
    with shim():
        broker.parent.delay(token, "retry")  # no scope here: straight to the broker
        (child,) = JOURNAL.wait_for(token, 1)
    assert child["args"] == ("child", 1)
    assert [done["attempt"] for done in JOURNAL.of(token, "body_done")] == [1]
