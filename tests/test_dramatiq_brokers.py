"""Dramatiq end to end: the executor and the task-run middleware on real Redis and RabbitMQ.

One in-process ``dramatiq.Worker`` (one worker thread) per broker consumes a unique
queue for the whole module. A second queue, ``IDLE``, has no consumer, so what
reaches it stays countable on the broker itself.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

import airlock
from airlock.integrations.dramatiq import AirlockMiddleware, dramatiq_executor
from tests.conftest import require_service
from tests.otel_support import instrumented, send_through_worker

pytestmark = pytest.mark.one_lane  # real brokers and workers: the same Dramatiq on every lane

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RUN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
NAMESPACE = f"airlock-test-dramatiq-{RUN}"
QUEUE = f"airlock-test-dramatiq-{RUN}"
IDLE = f"{QUEUE}-idle"
TIMEOUT = 10.0


class Rig:
    """A broker, the actors declared on it, its worker, and what the actors recorded."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "redis":
            self.broker: dramatiq.Broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
            self.redis = redis.Redis.from_url(REDIS_URL)
        else:
            # Publisher confirms: once send() returns, RabbitMQ's queue counts include the message.
            self.broker = RabbitmqBroker(url=RABBITMQ_URL, confirm_delivery=True)
        self.broker.add_middleware(CurrentMessage())
        # No executor given nor configured: follow-ups go out through Dramatiq, the run's own queue.
        self.broker.add_middleware(AirlockMiddleware())
        self.records: list[tuple[Any, ...]] = []
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        self._declare_actors()
        self.worker = dramatiq.Worker(self.broker, worker_threads=1, worker_timeout=100, queues={QUEUE})

    def _declare_actors(self) -> None:
        def actor(fn: Any) -> Any:
            return dramatiq.actor(fn, broker=self.broker, queue_name=QUEUE, max_retries=0)

        @actor
        def record(label: str, i: int = 0, key: str | None = None) -> None:
            message = CurrentMessage.get_current_message()
            self._note(label, i, key, time.monotonic(), dict(message.options), message.message_id)

        @dramatiq.actor(broker=self.broker, queue_name=IDLE)
        def idle(label: str) -> None:  # never consumed: no worker listens on IDLE
            raise AssertionError("the idle queue has no consumer")

        @actor
        def parent(label: str, fail: bool = False) -> None:
            airlock.enqueue(record, f"{label}-child")
            airlock.enqueue(idle, f"{label}-child")
            message_id = CurrentMessage.get_current_message().message_id
            self._note(f"{label}-parent", self.idle_count(), None, time.monotonic(), None, message_id)
            if fail:
                raise RuntimeError("the parent fails after enqueueing")

        @dramatiq.actor(broker=self.broker, queue_name=QUEUE, max_retries=1, min_backoff=10, max_backoff=20)
        def flaky(label: str) -> None:
            with self.lock:
                attempt = self.attempts[label] = self.attempts.get(label, 0) + 1
            airlock.enqueue(record, f"{label}-child", attempt)
            if attempt == 1:
                raise RuntimeError("the first attempt fails and is retried")

        self.record, self.idle, self.parent, self.flaky = record, idle, parent, flaky
        if self.kind == "rabbitmq":
            self.broker.declare_queue(IDLE, ensure=True)

    def _note(self, *entry: Any) -> None:
        with self.lock:
            self.records.append(entry)

    def idle_count(self) -> int:
        """Messages sitting on the broker in the unconsumed queue (and its delay queue)."""
        if self.kind == "redis":
            return sum(self.redis.hlen(f"{NAMESPACE}:{name}.msgs") for name in (IDLE, f"{IDLE}.DQ"))
        ready, delayed, _dead = self.broker.get_queue_message_counts(IDLE)
        return ready + delayed

    def labelled(self, label: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [entry for entry in self.records if entry[0] == label]

    def wait_for(self, label: str, count: int = 1) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.labelled(label)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{label!r} ran {len(self.labelled(label))} times, expected {count}")
            time.sleep(0.01)
        self.settle()
        return self.labelled(label)

    def settle(self) -> None:
        """Wait until the worker has nothing left, so 'exactly once' can be asserted."""
        self.broker.join(QUEUE, timeout=int(TIMEOUT * 1000))
        self.worker.join()

    def close(self) -> None:
        self.worker.stop()
        self.broker.flush_all()
        if self.kind == "redis":
            keys = list(self.redis.scan_iter(f"{NAMESPACE}:*"))
            if keys:
                self.redis.delete(*keys)
            self.redis.close()
        else:
            for name in (QUEUE, IDLE):
                for suffix in ("", ".DQ", ".XQ"):
                    self.broker.channel.queue_delete(name + suffix)
        self.broker.close()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"], ids=["redis", "rabbitmq"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    require_service(request.param)
    rig = Rig(request.param)
    rig.worker.start()
    try:
        yield rig
    finally:
        rig.close()


def test_flushed_scope_runs_each_task_once_with_its_args(rig: Rig) -> None:
    with airlock.scope(executor=dramatiq_executor):
        intent = airlock.enqueue(rig.record, "once", 7, key="k")
    runs = rig.wait_for("once")
    assert [entry[:3] for entry in runs] == [("once", 7, "k")]
    assert intent.name == "record"


def test_message_options_reach_the_worker(rig: Rig) -> None:
    options = {"max_retries": 3, "time_limit": 5_000, "max_age": 60_000}
    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(rig.record, "options", _dispatch_options=options)
    (run,) = rig.wait_for("options")
    received = run[4]
    assert {name: received.get(name) for name in options} == options


def test_delay_really_delays(rig: Rig) -> None:
    # Dramatiq counts the delay from the publish, which happens inside the flush: the
    # clock is read before it (read after it, the flush's own time made this flaky).
    before_flush = time.monotonic()
    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(rig.record, "delayed", _dispatch_options={"delay": 700})
        airlock.enqueue(rig.record, "prompt")
    (prompt,) = rig.wait_for("prompt")
    (delayed,) = rig.wait_for("delayed")
    assert delayed[3] - before_flush >= 0.7
    assert prompt[3] < delayed[3]


def test_executor_returns_the_message_on_intent_dispatched(rig: Rig) -> None:
    results: list[Any] = []

    def on_dispatched(sender: object, *, intent: object, result: Any) -> None:
        results.append(result)

    airlock.signals.intent_dispatched.connect(on_dispatched)
    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(rig.record, "result")
    (message,) = results
    assert isinstance(message, dramatiq.Message)
    assert (message.queue_name, message.actor_name, message.args) == (QUEUE, "record", ("result",))
    rig.wait_for("result")


def test_discarded_scope_never_reaches_the_broker(rig: Rig) -> None:
    with pytest.raises(KeyError), airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(rig.idle, "discarded")
        airlock.enqueue(rig.idle, "discarded-later", _dispatch_options={"delay": 50})
        raise KeyError("the unit of work fails")
    # A control message sent after the discard: once it is counted, anything sent
    # before it would be too, so a count of exactly one proves nothing else arrived.
    rig.broker.flush(IDLE)
    rig.idle.send("control")
    assert rig.idle_count() == 1
    rig.broker.flush(IDLE)


def test_order_is_kept_within_one_flush(rig: Rig) -> None:
    with airlock.scope(executor=dramatiq_executor):
        for i in range(20):
            airlock.enqueue(rig.record, "ordered", i)
    runs = rig.wait_for("ordered", 20)
    assert [entry[1] for entry in runs] == list(range(20))


def test_follow_ups_go_out_only_after_the_task_succeeds(rig: Rig) -> None:
    rig.broker.flush(IDLE)
    rig.parent.send("ok")
    (parent,) = rig.wait_for("ok-parent")
    (child,) = rig.wait_for("ok-child")
    assert parent[1] == 0, "the follow-up reached the broker while the task was still running"
    assert child[3] > parent[3]
    # Its own message, run by the worker: an inline call would see the parent's message.
    assert child[5] != parent[5]
    assert rig.idle_count() == 1
    rig.broker.flush(IDLE)


def test_follow_ups_of_a_failed_task_never_go_out(rig: Rig) -> None:
    rig.broker.flush(IDLE)
    rig.parent.send("failing", fail=True)
    rig.wait_for("failing-parent")
    rig.idle.send("control")
    assert rig.idle_count() == 1  # only the control
    assert rig.labelled("failing-child") == []
    rig.broker.flush(IDLE)


def test_a_retried_run_sends_its_follow_ups_once(rig: Rig) -> None:
    rig.flaky.send("flaky")
    runs = rig.wait_for("flaky-child")
    assert [entry[1] for entry in runs] == [2], "only the successful second attempt may send"
    assert rig.attempts["flaky"] == 2


def test_the_worker_run_joins_the_trace_of_the_enqueuing_request(rig: Rig) -> None:
    with instrumented() as telemetry:
        hop = send_through_worker(telemetry, dramatiq_executor, rig.record, system="dramatiq")
        rig.wait_for(hop.token)
    assert hop.consumer.attributes["messaging.system"] == "dramatiq"
