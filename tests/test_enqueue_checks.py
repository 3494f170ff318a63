"""Mistakes the queue executors catch at enqueue, and the snapshot of what they send.

``celery_executor``, ``dramatiq_executor`` and ``huey_executor`` each carry a
``check_enqueue`` that ``airlock.enqueue()`` runs while the caller's transaction is
still open: option names, the arguments against the task's signature and against
the serializer the queue will use. What that serializer gives back is what is
sent, so changing an argument after ``enqueue()`` changes nothing. Proven against
the real broker: the message read back from the queue holds the snapshot.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.serialization import loads

import airlock
from airlock.integrations.executors.celery import celery_executor, make_celery_executor
from airlock.integrations.executors.dramatiq import dramatiq_executor
from airlock.integrations.executors.huey import huey_executor
from tests.faults import OwnRedis, target

QUEUES = ["celery", "dramatiq", "huey"]
EXECUTORS = {"celery": celery_executor, "dramatiq": dramatiq_executor, "huey": huey_executor}
JSON_QUEUES = ["celery", "dramatiq"]  # Huey pickles


class Rig:
    """A task of one queue on our own Redis, and a way to read back what was sent."""

    def __init__(self, queue: str, url: str) -> None:
        self.queue = queue
        self.url = url
        self.job, self.executor, self._close = target(queue, url)
        self.signed = self._declare(_signed)

    def _declare(self, function: Any) -> Any:
        job = self.job
        if self.queue == "celery":
            return job.app.task(name=f"{job.name}.{function.__name__}")(function)
        if self.queue == "dramatiq":
            import dramatiq

            name = f"{job.actor_name}_{function.__name__}"
            return dramatiq.actor(function, broker=job.broker, actor_name=name, queue_name=job.queue_name)
        return job.huey.task(name=f"{job.name}_{function.__name__}")(function)

    def sent(self) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The (args, kwargs) of every message waiting on the broker, oldest first."""
        if self.queue == "celery":
            # kombu's Redis transport: LPUSHed JSON envelopes, the body base64-encoded.
            client = redis.Redis.from_url(self.url)
            queue = self.job.app.conf.task_default_queue
            envelopes = [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
            client.delete(queue)
            found = []
            for envelope in envelopes:
                body = base64.b64decode(envelope["body"])
                args, kwargs, _embed = loads(body, envelope["content-type"], envelope["content-encoding"], force=True)
                found.append((tuple(args), kwargs))
            return found
        if self.queue == "dramatiq":
            import dramatiq

            broker = self.job.broker
            raw = broker.client.hvals(f"{broker.namespace}:{self.job.queue_name}.msgs")
            messages = sorted((dramatiq.Message.decode(data) for data in raw), key=lambda m: m.message_timestamp)
            return [(tuple(m.args), m.kwargs) for m in messages]
        # Huey LPUSHes serialized tasks; read them all without a blocking pop.
        huey = self.job.huey
        storage = huey.storage
        raw = reversed(storage.conn.lrange(storage.queue_key, 0, -1))
        storage.conn.delete(storage.queue_key)
        return [(tuple(task.data[0]), task.data[1]) for task in map(huey.deserialize_task, raw)]

    def close(self) -> None:
        self._close()


def _signed(order_id: int, *, status: str = "paid", note: Any = None) -> None:
    """A task with a signature to check against (never runs: no worker)."""


@pytest.fixture(scope="module")
def redis_server() -> Iterator[OwnRedis]:
    with OwnRedis() as server:
        yield server


@pytest.fixture(params=QUEUES)
def rig(request: pytest.FixtureRequest, redis_server: OwnRedis) -> Iterator[Rig]:
    rig = Rig(request.param, redis_server.url)
    yield rig
    rig.close()


def _scope(rig: Rig) -> Any:
    return airlock.scope(executor=rig.executor)


# -- snapshot -----------------------------------------------------------------------


def test_mutating_an_argument_after_enqueue_does_not_change_what_is_sent(rig: Rig) -> None:
    order = {"id": 7, "status": "paid", "lines": [{"sku": "A1", "qty": 1}]}
    with _scope(rig):
        airlock.enqueue(rig.signed, 7, note=order)
        order["status"] = "refunded"
        order["lines"][0]["qty"] = 99  # type: ignore[index]
    [(args, kwargs)] = rig.sent()
    assert args == (7,)
    assert kwargs["note"] == {"id": 7, "status": "paid", "lines": [{"sku": "A1", "qty": 1}]}


def test_plain_arguments_are_sent_as_they_are(rig: Rig) -> None:
    with _scope(rig):
        intent = airlock.enqueue(rig.signed, 7, status="shipped")
    assert intent.args == (7,)
    assert rig.sent() == [((7,), {"status": "shipped"})]


def test_the_buffered_intent_is_the_snapshot(rig: Rig) -> None:
    note = {"status": "paid"}
    with _scope(rig) as scope:
        intent = airlock.enqueue(rig.signed, 7, note=note)
        assert scope.intents == [intent]
        assert intent.kwargs["note"] == note and intent.kwargs["note"] is not note
    rig.sent()


# -- option names, argument counts -------------------------------------------------------


def test_an_unknown_option_is_refused_at_enqueue_and_nothing_is_buffered(rig: Rig) -> None:
    with _scope(rig) as scope:
        with pytest.raises(TypeError, match=r"unknown _dispatch_options 'retires'"):
            airlock.enqueue(rig.signed, 7, _dispatch_options={"retires": 3})
        assert scope.intents == []
    assert rig.sent() == []


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((), {}, "missing a required argument: 'order_id'"),
        ((7, 8), {}, "too many positional arguments"),
        ((7,), {"stauts": "paid"}, r"unexpected keyword argument 'stauts' \(did you mean 'status'\?\)"),
    ],
    ids=["missing", "too-many", "misspelt-keyword"],
)
def test_arguments_that_do_not_fit_the_signature_are_refused_at_enqueue(
    rig: Rig, args: tuple[Any, ...], kwargs: dict[str, Any], says: str
) -> None:
    with _scope(rig) as scope:
        with pytest.raises(TypeError, match=says) as refused:
            airlock.enqueue(rig.signed, *args, **kwargs)
        assert scope.intents == []
    assert "_signed(order_id, *, status='paid', note=None)" in str(refused.value)
    assert "enqueue it with the arguments its signature takes" in str(refused.value)
    assert rig.sent() == []


# -- what the serializer cannot encode -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ({1, 2}, r"pass a list \(sorted\(note\)\), not a set"),
        (object(), r"pass plain data instead"),
    ],
    ids=["set", "object"],
)
@pytest.mark.parametrize("queue", JSON_QUEUES)
def test_a_json_queue_refuses_what_its_encoder_cannot_encode_naming_the_argument(
    queue: str, redis_server: OwnRedis, value: Any, fix: str
) -> None:
    rig = Rig(queue, redis_server.url)
    try:
        with _scope(rig) as scope:
            with pytest.raises(TypeError, match=fix) as refused:
                airlock.enqueue(rig.signed, 7, note=value)
            assert scope.intents == []
        assert "keyword argument 'note'" in str(refused.value)
        assert "serializer cannot encode" in str(refused.value)
    finally:
        rig.close()


@pytest.mark.parametrize("queue", JSON_QUEUES)
def test_a_model_instance_is_refused_with_the_pk_fix(queue: str, redis_server: OwnRedis) -> None:
    from tests.djangoproject.shop.models import Order

    rig = Rig(queue, redis_server.url)
    try:
        with _scope(rig):
            with pytest.raises(TypeError, match=r"argument 'order_id' is an Order.*pass order_id\.pk, not the model"):
                airlock.enqueue(rig.signed, Order(pk=3, sku="A1"))
    finally:
        rig.close()


def test_huey_refuses_what_pickle_cannot_encode(redis_server: OwnRedis) -> None:
    rig = Rig("huey", redis_server.url)
    try:
        with _scope(rig) as scope:
            with pytest.raises(TypeError, match=r"keyword argument 'note' is a lock.*pickle serializer cannot"):
                airlock.enqueue(rig.signed, 7, note=threading.Lock())
            assert scope.intents == []
            airlock.enqueue(rig.signed, 7, note={1, 2})  # a set pickles fine
        assert rig.sent() == [((7,), {"note": {1, 2}})]
    finally:
        rig.close()


def test_celery_checks_with_the_serializer_the_message_will_use(redis_server: OwnRedis) -> None:
    """A pickle task (or option) may send a set; a json one may not."""
    rig = Rig("celery", redis_server.url)
    try:
        with _scope(rig):
            airlock.enqueue(rig.signed, 7, note={1, 2}, _dispatch_options={"serializer": "pickle"})
            with pytest.raises(TypeError, match="json serializer"):
                airlock.enqueue(rig.signed, 7, note={1, 2})
    finally:
        rig.close()
    assert rig.job.app.conf.task_serializer == "json"


def test_the_check_travels_with_a_made_executor() -> None:
    assert make_celery_executor(timeout=1).check_enqueue is celery_executor.check_enqueue  # type: ignore[attr-defined]


# -- inside a transaction --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_under_a_django_scope_the_error_is_raised_inside_the_transaction_and_the_buffer_is_intact(
    redis_server: OwnRedis,
) -> None:
    from django.db import transaction

    from airlock.integrations.django import DjangoScope
    from tests.djangoproject.checks import require_database
    from tests.djangoproject.shop.models import Order

    require_database()
    rig = Rig("celery", redis_server.url)
    try:
        with transaction.atomic():
            with DjangoScope(executor=rig.executor) as scope:
                order = Order.objects.create(sku="A1")
                airlock.enqueue(rig.signed, order.pk)
                with pytest.raises(TypeError, match=r"pass order_id\.pk"):
                    airlock.enqueue(rig.signed, order)
                assert transaction.get_connection().in_atomic_block  # still open: the caller decides
                assert [intent.args for intent in scope.intents] == [(order.pk,)]
        assert rig.sent() == [((order.pk,), {})]
    finally:
        rig.close()


def test_a_call_shape_that_fit_before_does_not_let_a_wrong_one_through(rig: Rig) -> None:
    with _scope(rig):
        airlock.enqueue(rig.signed, 7, status="shipped")
        airlock.enqueue(rig.signed, 8, status="shipped")  # the same shape: remembered
        with pytest.raises(TypeError, match="too many positional arguments"):
            airlock.enqueue(rig.signed, 7, 8, status="shipped")
    assert [args for args, _kwargs in rig.sent()] == [(7,), (8,)]


def test_a_celery_task_with_typing_off_is_not_checked_against_its_signature(redis_server: OwnRedis) -> None:
    """Celery's own opt-out (``typing=False``) holds for the check at enqueue too."""
    rig = Rig("celery", redis_server.url)
    try:
        loose = rig.job.app.task(name=f"{rig.job.name}.loose", typing=False)(_signed)
        with _scope(rig):
            airlock.enqueue(loose, 7, 8, 9)
        assert rig.sent() == [((7, 8, 9), {})]
    finally:
        rig.close()
