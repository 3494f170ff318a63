"""Django Tasks end to end: django-tasks-db on PostgreSQL and a real ``db_worker`` running the tasks.

One ``db_worker`` subprocess serves the module, on the test database the session
created, for the ``airlock_db`` backend (an ``AirlockBackend`` wrapping the
``DatabaseBackend``). The tests use ``transaction=True`` so what they enqueue is
committed and visible to it. The worker has no ``AIRLOCK["EXECUTOR"]``: the runs'
follow-ups go through ``django_tasks_executor`` as the task-run scope's default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

pytest.importorskip(
    "django.tasks", reason=f"django.tasks needs Django 6, which needs Python 3.12+ (this is {sys.version.split()[0]})"
)

from django.db import connection, transaction
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

import airlock
from airlock.integrations.django import DjangoScope
from airlock.integrations.executors.django_tasks import TRACE_KWARG, django_tasks_executor
from tests.conftest import require_service
from tests.django_tasks_support import Worker, tasks, wait_for
from tests.djangoproject.shop.models import Order
from tests.otel_django_q_tasks import assert_report_continued
from tests.otel_support import instrumented, request_enqueuing

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

FINISHED = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """Start one db_worker for the module, on the session's test database."""
    from tests.djangoproject import settings

    if settings.ENGINE != "postgres":
        pytest.skip("the db_worker subprocess runs on the PostgreSQL test database; SQLite runs skip it")
    require_service("postgres")
    request.getfixturevalue("django_db_setup")
    with open(tmp_path_factory.mktemp("db_worker") / "db_worker.log", "w+b") as log:
        running = Worker(connection.settings_dict["NAME"], tasks.BACKEND, log)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(autouse=True)
def _executor(worker: Worker) -> Iterator[None]:
    airlock.configure(scope_cls=DjangoScope, executor=django_tasks_executor)
    yield
    # The test's teardown empties the tables: let the worker finish what it holds first
    # (a follow-up still running when its row vanishes makes db_worker exit).
    pending = DBTaskResult.objects.exclude(status__in=FINISHED)
    wait_for(lambda: not pending.exists(), what="an idle worker", worker=worker)


def finished(worker: Worker, *, count: int, timeout: float = 20.0, **filters: object) -> list[DBTaskResult]:
    """Wait until ``count`` finished rows match ``filters``; return them in the order they finished."""

    def probe() -> list[DBTaskResult] | None:
        rows = list(DBTaskResult.objects.finished().filter(**filters).order_by("finished_at"))
        return rows if len(rows) >= count else None

    return wait_for(probe, timeout=timeout, what=f"{count} finished task(s) matching {filters}", worker=worker)


def children(label: str) -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(task_path=tasks.child.module_path, args_kwargs__args__0__startswith=label))


def test_flushed_tasks_run_once_with_their_options(worker):
    with airlock.scope():
        airlock.enqueue(tasks.record, "via-executor", 1, _dispatch_options={"priority": 9, "queue_name": "emails"})
        tasks.record.using(priority=-3).enqueue("via-enqueue", key="v")
        assert DBTaskResult.objects.count() == 0
    rows = finished(worker, count=2)
    by_label = {row.args_kwargs["args"][0]: row for row in rows}
    executor_row, plain_row = by_label["via-executor"], by_label["via-enqueue"]
    assert (executor_row.priority, executor_row.queue_name) == (9, "emails")
    assert (plain_row.priority, plain_row.queue_name) == (-3, "default")
    for row in rows:
        assert row.status == TaskResultStatus.SUCCESSFUL, row.traceback
        assert len(row.worker_ids) == 1
    assert plain_row.return_value["kwargs"] == {"key": "v"}
    assert sorted(Order.objects.values_list("sku", flat=True)) == ["via-enqueue", "via-executor"]


def test_run_after_really_delays(worker):
    run_after = timezone.now() + timedelta(seconds=1.5)
    with airlock.scope():
        airlock.enqueue(tasks.record, "later", _dispatch_options={"run_after": run_after})
        tasks.record.enqueue("now")
    [now] = finished(worker, count=1, args_kwargs__args__0="now")
    assert not Order.objects.filter(sku="later").exists()
    [later] = finished(worker, count=1, args_kwargs__args__0="later")
    assert later.run_after == run_after
    assert later.started_at >= run_after > now.finished_at


def test_discarded_scope_never_reaches_the_table(worker):
    with pytest.raises(RuntimeError), airlock.scope():
        tasks.record.enqueue("discarded")
        airlock.enqueue(tasks.record, "discarded-too")
        raise RuntimeError("the unit of work fails")
    assert DBTaskResult.objects.count() == 0
    with airlock.scope():
        tasks.record.enqueue("after")
    finished(worker, count=1, args_kwargs__args__0="after")
    assert DBTaskResult.objects.count() == 1
    assert list(Order.objects.values_list("sku", flat=True)) == ["after"]


def test_nothing_before_the_commit_nothing_after_a_rollback(worker):
    with transaction.atomic():
        with airlock.scope():
            Order.objects.create(sku="order-7")
            tasks.record.enqueue("committed")
        assert not DBTaskResult.objects.exists()
    with pytest.raises(RuntimeError), transaction.atomic():
        with airlock.scope():
            tasks.record.enqueue("rolled-back")
        raise RuntimeError("roll back")
    finished(worker, count=1, args_kwargs__args__0="committed")
    assert [row.args_kwargs["args"] for row in DBTaskResult.objects.all()] == [["committed"]]


@pytest.mark.parametrize("name", ["parent", "decorated_parent"])
def test_follow_ups_go_out_only_after_the_run_succeeds(worker, name):
    with airlock.scope():
        getattr(tasks, name).enqueue(f"{name}-ok")
    [run] = finished(worker, count=1, task_path=getattr(tasks, name).module_path)
    assert run.status == TaskResultStatus.SUCCESSFUL, run.traceback
    assert run.return_value["children_stored_during_run"] == 0
    follow_ups = wait_for(lambda: len(children(f"{name}-ok")) == 2 and children(f"{name}-ok"), what="two follow-ups")
    assert sorted(row.args_kwargs["args"][0] for row in follow_ups) == [f"{name}-ok-airlock", f"{name}-ok-plain"]
    assert all(row.enqueued_at >= run.started_at for row in follow_ups)
    finished(worker, count=2, task_path=tasks.child.module_path)


@pytest.mark.parametrize("name", ["parent", "decorated_parent"])
def test_a_failed_run_sends_no_follow_ups(worker, name):
    with airlock.scope():
        getattr(tasks, name).enqueue(f"{name}-fails", fail=True)
        tasks.record.enqueue("sentinel")
    [run] = finished(worker, count=1, task_path=getattr(tasks, name).module_path)
    assert run.status == TaskResultStatus.FAILED and "fails on purpose" in run.traceback
    finished(worker, count=1, args_kwargs__args__0="sentinel")
    assert children(f"{name}-fails") == []


@pytest.mark.parametrize("name", ["with_context", "decorated_with_context"])
def test_takes_context_tasks_keep_working(worker, name):
    with airlock.scope():
        handle = getattr(tasks, name).enqueue(f"{name}-ctx")
    [run] = finished(worker, count=1, task_path=getattr(tasks, name).module_path)
    assert run.status == TaskResultStatus.SUCCESSFUL, run.traceback
    assert run.return_value["attempt"] == 1
    assert run.return_value["children_stored_during_run"] == 0
    assert handle.task_result.id == str(run.id)
    handle.refresh()
    assert handle.status == TaskResultStatus.SUCCESSFUL and isinstance(handle.finished_at, datetime)
    wait_for(lambda: children(f"{name}-ctx"), what="the follow-up")


def test_the_run_joins_the_enqueuers_trace_across_processes(worker):
    """The trace context travels as airlock_task's keyword; the worker's run continues it."""
    with instrumented() as otel:
        token = os.urandom(8).hex()
        request = request_enqueuing(otel, django_tasks_executor, tasks.traced, token)
    (send,) = otel.named("send traced")
    assert send.context.trace_id == request.get_span_context().trace_id
    assert send.attributes["messaging.system"] == "django_tasks"
    [run] = finished(worker, count=1, id=send.attributes["messaging.message.id"])
    assert run.status == TaskResultStatus.SUCCESSFUL, run.traceback
    assert TRACE_KWARG in run.args_kwargs["kwargs"], "the carrier is stored with the task"
    assert_report_continued(run.return_value, token, send)
