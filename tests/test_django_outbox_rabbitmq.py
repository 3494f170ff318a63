"""The outbox on RabbitMQ: a node of the test's own, stopped, frozen and refusing, with a real Celery worker.

One RabbitMQ node is booted for the module (``tests.faults.OwnRabbitMQ``, on free
ports of its own; it takes 6 to 20 s) and stopped, restarted, SIGSTOPped and
SIGCONTed by its pid. The shared RabbitMQ on 5672 is never touched. The Celery
app publishes with publisher confirms (``broker_transport_options={"confirm_publish":
True}``) to a durable queue, as docs/reliability.md asks; a real worker (in a
thread, solo pool) consumes it and notes the task id of every run, so "each
task id once" is counted on the consumer.

PostgreSQL by default; ``AIRLOCK_TEST_DB=sqlite`` or ``=mariadb`` runs the same
scenarios on those (the relay claims with SKIP LOCKED there, or in SQLite's
single-relay mode). Without ``rabbitmq-server`` the module skips, and fails
under ``CI=true``. It takes about a minute; ``AIRLOCK_SKIP_OWN_RABBITMQ=1`` skips
it, for CI lanes that leave it to another.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.db import connections, transaction
from kombu import Queue

import airlock
from airlock.integrations.django.outbox import READY, SENT, OutboxMessage, OutboxScope, Relay, configure_outbox
from airlock.integrations.executors import flush_window
from airlock.integrations.executors.celery import celery_executor
from tests.conftest import IN_CI
from tests.djangoproject.checks import require_database
from tests.faults import OwnRabbitMQ
from tests.outbox_support import drain_relay, rows, states

require_database()

pytestmark = pytest.mark.django_db(transaction=True)

COUNT = 1000  # intents committed while the node is stopped
WAIT = 120.0  # seconds: only reached when something is wrong


def _require_rabbitmq_server() -> None:
    if os.environ.get("AIRLOCK_SKIP_OWN_RABBITMQ") == "1":
        pytest.skip("AIRLOCK_SKIP_OWN_RABBITMQ=1: this lane leaves the RabbitMQ fault scenarios to another")
    if shutil.which("rabbitmq-server") is None:
        reason = "rabbitmq-server is not installed; install it to run the outbox's RabbitMQ fault tests"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> Iterator[OwnRabbitMQ]:
    _require_rabbitmq_server()
    with OwnRabbitMQ() as started:
        yield started


class Consumer:
    """A Celery app on the node, its ``record`` task, and the task ids its worker ran."""

    def __init__(self, node: OwnRabbitMQ, *, confirm: bool = True) -> None:
        self.name = f"outbox_rabbitmq_{uuid.uuid4().hex[:8]}"
        # Queues of its own: kombu's pools outlive an app, with their "already
        # declared" caches, and a queue deleted behind one would swallow messages.
        self.queue = f"{self.name}.queue"  # durable; the worker consumes it
        self.full = f"{self.name}.full"  # holds one message and refuses the next (reject-publish)
        self.ran: list[str] = []
        self._lock = threading.Lock()
        self.app = app = Celery(self.name, broker=node.url, set_as_current=False)
        app.conf.update(
            task_default_queue=self.queue,
            task_queues=[
                Queue(self.queue, durable=True),
                Queue(self.full, durable=True, queue_arguments={"x-max-length": 1, "x-overflow": "reject-publish"}),
            ],
            task_serializer="json",
            accept_content=["json"],
            worker_hijack_root_logger=False,
            worker_prefetch_multiplier=50,
            broker_connection_retry_on_startup=True,
            # Publisher confirms: a publish returns once RabbitMQ has the message.
            broker_transport_options={"confirm_publish": confirm},
        )

        @app.task(name=f"{self.name}.record", bind=True, shared=False)
        def record(task: Any, *args: Any) -> None:
            with self._lock:
                self.ran.append(task.request.id)

        self.record = record

    def depth(self, queue: str) -> int:
        with self.app.connection_for_write() as connection:
            return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)

    def consume_all(self) -> collections.Counter[str]:
        """Run a worker until it ran everything published so far; the runs per task id.

        One FIFO queue and one consumer: a sentinel published last runs only after
        every message before it, duplicates included.
        """
        sentinel = self.record.apply_async(("sentinel",), queue=self.queue).id
        deadline = time.monotonic() + WAIT
        with start_worker(
            self.app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=[self.queue],
            shutdown_timeout=15,
            use_eventloop=False,
        ):
            while sentinel not in self.ran:
                assert time.monotonic() < deadline, f"the worker ran {len(self.ran)} messages, never the sentinel"
                time.sleep(0.05)
        counts = collections.Counter(self.ran)
        del counts[sentinel]
        return counts

    def close(self) -> None:
        with self.app.connection_for_write() as connection:
            for queue in (self.queue, self.full):
                connection.default_channel.queue_delete(queue)
        self.app.close()


@pytest.fixture
def consumer(node: OwnRabbitMQ) -> Iterator[Consumer]:
    configure_outbox({})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    made = Consumer(node)
    try:
        yield made
    finally:
        node.thaw()
        made.close()
        configure_outbox(None)


def drain(relay: Relay) -> int:
    """The relay until nothing is due; a restarted node takes longer to accept than a Redis."""
    return drain_relay(relay, rounds=100, pause=0.1)


def attempts() -> list[int]:
    return list(OutboxMessage.objects.order_by("id").values_list("attempts", flat=True))


def intent_ids() -> set[str]:
    return {intent_id for intent_id, _, _ in rows()}


def test_a_thousand_intents_committed_while_rabbitmq_is_stopped_are_all_delivered_once(node, consumer):
    node.stop()
    try:
        started = time.monotonic()
        for batch in range(10):  # ten requests; none of them fails
            with airlock.scope(), transaction.atomic():
                for number in range(COUNT // 10):
                    airlock.enqueue(consumer.record, batch * (COUNT // 10) + number)
        committing = time.monotonic() - started
        assert states() == [READY] * COUNT
        relay = Relay(databases=["default"], batch_size=200)
        done = relay.run_once()  # while the node is down: a pause, not a failure
        assert done.unreachable is not None
        assert (done.sent, done.failed, done.dead) == (0, 0, 0)
        assert set(attempts()) == {0}
    finally:
        node.start()
    started = time.monotonic()
    assert drain(relay) == COUNT
    relaying = time.monotonic() - started
    assert states() == [SENT] * COUNT
    assert set(attempts()) == {0}
    counts = consumer.consume_all()
    assert set(counts) == intent_ids()  # all delivered
    assert counts.most_common(1)[0][1] == 1  # each task id once
    print(
        f"\nrabbitmq stopped: {COUNT} intents committed in {committing:.2f}s, "
        f"relayed with confirms in {relaying:.2f}s after the restart, {len(counts)}/{COUNT} run once"
    )


def test_a_frozen_rabbitmq_costs_the_request_one_timeout_and_the_relay_delivers_after_the_thaw(
    node, consumer, monkeypatch
):
    import amqp.transport

    with airlock.scope(), transaction.atomic():
        airlock.enqueue(consumer.record, "warm")  # the pool holds a live connection before the freeze
    assert states() == [SENT]
    # Count the reads that hit the socket timeout: the request must pay one (the
    # confirm of its first publish), not a closing handshake on top of it.
    timeouts = [0]
    read_frame = amqp.transport._AbstractTransport.read_frame

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return read_frame(self, *args, **kwargs)
        except OSError as error:
            if isinstance(error, (TimeoutError, BlockingIOError)) and self.sock.gettimeout() != 0:
                timeouts[0] += 1
            raise

    monkeypatch.setattr(amqp.transport._AbstractTransport, "read_frame", counted)
    node.freeze()
    try:
        took: list[float] = []

        def request() -> None:
            started = time.monotonic()
            try:
                with airlock.scope(), transaction.atomic():
                    for number in range(5):
                        airlock.enqueue(consumer.record, number)
                took.append(time.monotonic() - started)
            finally:
                connections.close_all()  # this thread's own connection

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        thread.join(WAIT)
        assert not thread.is_alive(), "the request blocked on a frozen RabbitMQ"
        assert took, "the request raised"
        assert states() == [SENT] + [READY] * 5  # the unconfirmed publish is not marked sent
        paid = timeouts[0]
        assert paid == 1
        with flush_window():  # as a relay process of its own would: no memory of the request's failure
            done = Relay(databases=["default"]).run_once()  # while frozen: a pause, not a failure
        assert done.unreachable is not None
        assert (done.sent, done.failed) == (0, 0)
        assert set(attempts()) == {0}
    finally:
        node.thaw()
    assert drain(Relay(databases=["default"])) == 5
    counts = consumer.consume_all()
    assert set(counts) == intent_ids()
    first = rows()[1][0]  # its frames reached the node's socket before the freeze
    duplicates = {intent_id for intent_id, runs in counts.items() if runs > 1}
    assert duplicates <= {first}  # at least once: only the unconfirmed one may run twice
    print(
        f"\nrabbitmq frozen: the request took {took[0]:.2f}s ({paid} socket timeout), "
        f"duplicates after the thaw: {len(duplicates)}"
    )


def test_with_confirms_a_publish_rabbitmq_refused_is_not_marked_sent_and_spends_an_attempt(node, consumer):
    consumer.record.apply_async(("filler",), queue=consumer.full)  # the queue is full now: the next publish is nacked
    configure_outbox({"FAST_PATH": False})
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(consumer.record, "refused", _dispatch_options={"queue": consumer.full})
        airlock.enqueue(consumer.record, "kept")
    done = Relay(databases=["default"]).run_once()
    assert (done.sent, done.failed, done.unreachable) == (1, 1, None)
    refused, kept = OutboxMessage.objects.order_by("id")
    assert (refused.state, refused.attempts) == (READY, 1)  # retried later, with backoff
    assert "MessageNacked" in refused.last_error
    assert (kept.state, kept.attempts) == (SENT, 0)
    assert consumer.depth(consumer.full) == 1


def test_without_confirms_the_same_refused_publish_is_marked_sent_and_lost(node, consumer):
    unconfirmed = Consumer(node, confirm=False)
    try:
        unconfirmed.record.apply_async(("filler",), queue=unconfirmed.full)
        configure_outbox({"FAST_PATH": False})
        with airlock.scope(), transaction.atomic():
            airlock.enqueue(unconfirmed.record, "dropped", _dispatch_options={"queue": unconfirmed.full})
        assert Relay(databases=["default"]).run_once().sent == 1
        assert states() == [SENT]  # the outbox believes it went ...
        assert unconfirmed.depth(unconfirmed.full) == 1  # ... and RabbitMQ dropped it: why confirm_publish is required
    finally:
        unconfirmed.close()


def test_a_nacked_publish_fails_alone_and_does_not_trip_the_executors_breaker(node, consumer):
    from airlock import signals

    consumer.record.apply_async(("filler",), queue=consumer.full)
    sent: list[Any] = []
    failed: list[tuple[Any, BaseException]] = []
    with (
        signals.intent_dispatched.connected_to(lambda scope, intent, result: sent.append(intent)),
        signals.dispatch_failed.connected_to(lambda scope, intent, error: failed.append((intent, error))),
    ):
        with airlock.scope(outbox=False):  # a plain DjangoScope, straight to the executor
            refused = airlock.enqueue(consumer.record, "refused", _dispatch_options={"queue": consumer.full})
            kept = airlock.enqueue(consumer.record, "kept")
    assert [intent for intent, _ in failed] == [refused]
    assert type(failed[0][1].__cause__).__name__ == "MessageNacked"  # not BrokerUnavailableError
    assert sent == [kept]
    assert consumer.consume_all().total() == 1


DRAMATIQ_COUNT = 200


class DramatiqOnRabbitMQ:
    """A Dramatiq RabbitmqBroker on the node (with confirms), an actor, and the message ids its worker ran."""

    def __init__(self, node: OwnRabbitMQ, name: str) -> None:
        import dramatiq
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from dramatiq.middleware import CurrentMessage

        from airlock.integrations.executors.dramatiq import dramatiq_executor

        self.previous = dramatiq.get_broker()
        # confirm_delivery: a publish returns once RabbitMQ has the message.
        self.broker = broker = RabbitmqBroker(url=node.url, confirm_delivery=True)
        broker.add_middleware(CurrentMessage())
        dramatiq.set_broker(broker)
        self.ran: list[str] = []

        @dramatiq.actor(actor_name=f"{name}_job", queue_name=name, broker=broker, max_retries=0)
        def job(number: int) -> None:
            self.ran.append(CurrentMessage.get_current_message().message_id)

        self.job = job
        airlock.configure(scope_cls=OutboxScope, executor=dramatiq_executor)

    def consume(self, count: int) -> collections.Counter[str]:
        import dramatiq

        worker = dramatiq.Worker(self.broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            deadline = time.monotonic() + WAIT
            while len(self.ran) < count:
                assert time.monotonic() < deadline, f"the Dramatiq worker ran {len(self.ran)} of {count}"
                time.sleep(0.05)
            worker.join()  # the queue is empty and nothing is in flight
        finally:
            worker.stop()
        return collections.Counter(self.ran)

    def close(self) -> None:
        import dramatiq

        self.broker.close()
        dramatiq.set_broker(self.previous)


def in_a_thread(work: Any) -> Any:
    """``work()`` in a thread of its own (Dramatiq's connections are per thread), with a cap."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "blocked on a frozen RabbitMQ"
    assert result, "raised"
    return result[0]


def test_dramatiq_on_a_frozen_rabbitmq_the_request_gives_up_and_the_relay_pauses_without_spending_attempts(
    node, consumer
):
    dramatiq_side = DramatiqOnRabbitMQ(node, consumer.name)
    try:
        job = dramatiq_side.job
        node.freeze()
        try:

            def request() -> None:
                with airlock.scope(), transaction.atomic():
                    for number in range(5):
                        airlock.enqueue(job, number)

            in_a_thread(request)  # a new connection: its handshake times out, the rows stay
            assert states() == [READY] * 5
            done = in_a_thread(Relay(databases=["default"]).run_once)
            assert done.unreachable is not None  # pika's connector timeout, not a failure of the row
            assert (done.sent, done.failed) == (0, 0)
            assert set(attempts()) == {0}
        finally:
            node.thaw()
        assert drain(Relay(databases=["default"])) == 5
        counts = dramatiq_side.consume(5)
        assert set(counts) == intent_ids()
        assert counts.most_common(1)[0][1] == 1
    finally:
        dramatiq_side.close()


def test_dramatiq_intents_committed_while_rabbitmq_is_stopped_are_all_delivered_once(node, consumer):
    dramatiq_side = DramatiqOnRabbitMQ(node, consumer.name)
    try:
        job = dramatiq_side.job
        node.stop()
        try:
            for batch in range(4):
                with airlock.scope(), transaction.atomic():
                    for number in range(DRAMATIQ_COUNT // 4):
                        airlock.enqueue(job, batch * (DRAMATIQ_COUNT // 4) + number)
            assert states() == [READY] * DRAMATIQ_COUNT
            relay = Relay(databases=["default"])
            done = relay.run_once()
            assert done.unreachable is not None
            assert (done.sent, done.failed) == (0, 0)
            assert set(attempts()) == {0}
        finally:
            node.start()
        assert drain(relay) == DRAMATIQ_COUNT
        assert set(attempts()) == {0}
        counts = dramatiq_side.consume(DRAMATIQ_COUNT)
        assert set(counts) == intent_ids()
        assert counts.most_common(1)[0][1] == 1
    finally:
        dramatiq_side.close()
