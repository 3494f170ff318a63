"""Every queue end to end through the outbox: a row, the relay, the real broker, a real worker.

Celery, Dramatiq and Huey run on a Redis of the test's own; django-q2 on its ORM
broker with a ``qcluster`` subprocess (PostgreSQL only, as its own suite). Each
checks that the worker ran the task with the stored arguments, under the row's
intent id. ``django.tasks`` (Django 6, with django-tasks-db's ``db_worker``) has a
file of its own, ``tests/test_django_outbox_django_tasks.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction

import airlock
from airlock.integrations.django.outbox import READY, SENT, OutboxMessage, OutboxScope, Relay, configure_outbox
from tests.djangoproject.checks import require_database
from tests.outbox_support import make_app, rows, states
from tests.own_redis import OwnRedis, own_redis

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default"])


@pytest.fixture
def server() -> Iterator[OwnRedis]:
    with own_redis() as started:
        yield started


@pytest.fixture(autouse=True)
def outbox():
    configure_outbox({"FAST_PATH": False, "TASKS": ["tests.django_q_support.tasks.record"]})
    yield
    configure_outbox(None)


def wait_until(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.05)
    return found


def commit_two(task: Any, executor: Any) -> list[str]:
    """Enqueue two intents through the outbox, relay them, and return their intent ids."""
    airlock.configure(scope_cls=OutboxScope, executor=executor)
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(task, 1, colour="red")
        airlock.enqueue(task, 2, colour="blue")
    assert Relay(databases=["default"]).run_once().sent == 2
    assert states() == [SENT, SENT]
    return [intent_id for intent_id, _, _ in rows()]


def test_celery(server):
    """Two rows relayed to a real Celery worker; with tracing on, the run joins the request's trace."""
    from celery.contrib.testing.worker import start_worker
    from opentelemetry import trace

    from airlock.integrations.celery import AirlockTask
    from airlock.integrations.executors.celery import celery_executor
    from tests.otel_support import instrumented

    app, _ = make_app(f"outbox_e2e_{server.port}", server.url, "outbox-e2e")
    runs: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    traces: list[int] = []

    @app.task(name=f"outbox_e2e_{server.port}.job", bind=True, shared=False)
    def job(self: Any, *args: Any, **kwargs: Any) -> None:
        runs.append((self.request.id, args, kwargs))

    @app.task(name=f"outbox_e2e_{server.port}.traced", base=AirlockTask, shared=False)
    def traced(value: int) -> None:
        traces.append(trace.get_current_span().get_span_context().trace_id)

    ids = commit_two(job, celery_executor)
    with instrumented() as telemetry:
        # The relay sends this row after the request, from outside any span: the worker's
        # run still joins the request's trace, under the relay's send span.
        with telemetry.tracer_provider.get_tracer("test").start_as_current_span("request") as request:
            with airlock.scope(), transaction.atomic():
                airlock.enqueue(traced, 3)
        assert Relay(databases=["default"]).run_once().sent == 1
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["outbox-e2e"], use_eventloop=False):
            wait_until(lambda: len(runs) == 2 and traces, "three Celery runs")
        assert runs == [(ids[0], (1,), {"colour": "red"}), (ids[1], (2,), {"colour": "blue"})]
        trace_id = request.get_span_context().trace_id
        assert traces == [trace_id]
        send = telemetry.one(f"send {traced.name}")
        process = telemetry.one(f"process {traced.name}")
        assert send.attributes["airlock.outbox.relayed"] is True
        assert process.context.trace_id == trace_id
        assert process.parent is not None and process.parent.span_id == send.context.span_id
    app.pool.force_close_all()


def test_dramatiq(server):
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import CurrentMessage

    from airlock.integrations.executors.dramatiq import dramatiq_executor

    previous = dramatiq.get_broker()
    broker = RedisBroker(url=server.url)
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)
    runs: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    try:

        @dramatiq.actor(actor_name=f"outbox_e2e_{server.port}", broker=broker, max_retries=0)
        def job(*args: Any, **kwargs: Any) -> None:
            runs.append((CurrentMessage.get_current_message().message_id, args, kwargs))

        ids = commit_two(job, dramatiq_executor)
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            wait_until(lambda: len(runs) == 2, "two Dramatiq runs")
        finally:
            worker.stop()
        assert runs == [(ids[0], (1,), {"colour": "red"}), (ids[1], (2,), {"colour": "blue"})]
    finally:
        broker.close()
        dramatiq.set_broker(previous)


def test_huey(server):
    from huey import RedisHuey

    from airlock.integrations.executors.huey import huey_executor

    huey = RedisHuey(f"outbox-e2e-{server.port}", url=server.url)
    runs: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    @huey.task(context=True)
    def job(*args: Any, task: Any = None, **kwargs: Any) -> None:
        runs.append((task.id, args, kwargs))

    ids = commit_two(job, huey_executor)
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False, check_worker_health=False)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    consumer.start()  # its worker threads; it also sets signal handlers, put back below
    try:
        wait_until(lambda: len(runs) == 2, "two Huey runs")
    finally:
        consumer.stop(graceful=True)
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert runs == [(ids[0], (1,), {"colour": "red"}), (ids[1], (2,), {"colour": "blue"})]


def test_huey_on_sqlite_whose_file_cannot_be_opened_is_a_broker_down(tmp_path):
    # SqliteHuey's broker is a file: with its directory gone (a volume unmounted), every
    # publish fails alike, so the relay must pause without spending the rows' attempts.
    from huey import SqliteHuey

    from airlock.integrations.executors.huey import huey_executor

    directory = tmp_path / "queue"
    directory.mkdir()
    huey = SqliteHuey("outbox-sqlite", filename=str(directory / "huey.db"))

    @huey.task()
    def sqlite_job(number: int, colour: str) -> None:  # named apart: test_huey's job is registered too
        pass

    airlock.configure(scope_cls=OutboxScope, executor=huey_executor)
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(sqlite_job, 1, colour="red")
        airlock.enqueue(sqlite_job, 2, colour="blue")
    huey.storage.close()
    directory.rename(tmp_path / "away")
    relay = Relay(databases=["default"])
    done = relay.run_once()
    assert isinstance(done.unreachable, ConnectionError), done.unreachable
    assert "unable to open database file" in str(done.unreachable)
    assert (done.sent, done.failed, done.released) == (0, 0, 2)
    assert states() == [READY, READY]
    assert list(OutboxMessage.objects.values_list("attempts", flat=True)) == [0, 0]
    (tmp_path / "away").rename(directory)
    assert relay.run_once().sent == 2
    assert states() == [SENT, SENT]
    assert sorted(message.id for message in huey.pending()) == sorted(intent_id for intent_id, _, _ in rows())


def test_django_q(tmp_path):
    if os.environ.get("AIRLOCK_TEST_DB", "postgres") != "postgres":
        pytest.skip("the qcluster subprocess runs on PostgreSQL, as the django-q2 suite does")
    from django_q.conf import Conf
    from django_q.models import Task

    from airlock.integrations.executors.django_q import django_q_executor
    from tests.django_q_support import Worker
    from tests.django_q_support.tasks import record

    queue = f"airlock-outbox-djq-{os.getpid()}"
    with pytest.MonkeyPatch.context() as patch, open(tmp_path / "qcluster.log", "w+b") as log:
        patch.setattr(Conf, "CLUSTER_NAME", queue)
        worker = Worker(connection.settings_dict["NAME"], queue, log)
        try:
            ids = commit_two(record, django_q_executor)
            done = wait_until(lambda: Task.objects.filter(id__in=ids).count() == 2, "two django-q2 runs", 60)
        finally:
            worker.stop()
    assert done
    results = {task.id: task.result for task in Task.objects.filter(id__in=ids)}
    assert results == {
        ids[0]: {"args": [1], "kwargs": {"colour": "red"}},
        ids[1]: {"args": [2], "kwargs": {"colour": "blue"}},
    }


@pytest.mark.parametrize(
    ("task", "fix"),
    [
        ("child", 'add "tests.django_q_support.tasks.child" to settings.AIRLOCK["OUTBOX"]["TASKS"]'),
        ("lambda", 'make it a module-level function and add its dotted path to settings.AIRLOCK["OUTBOX"]["TASKS"]'),
    ],
    ids=["module-level", "lambda"],
)
def test_django_q_task_not_listed_is_refused_at_enqueue_naming_the_line_to_add(task, fix):
    from airlock.integrations.executors.django_q import django_q_executor
    from tests.django_q_support import tasks

    function = getattr(tasks, task) if task != "lambda" else lambda n: n
    airlock.configure(scope_cls=OutboxScope, executor=django_q_executor)
    with pytest.raises(TypeError) as refused, airlock.scope(), transaction.atomic():
        airlock.enqueue(function, 1)
    assert str(refused.value).endswith(f"; {fix}")
    assert rows() == []
