"""django-q2 end to end: the ORM broker on PostgreSQL and a real ``qcluster`` consuming.

One ``qcluster`` subprocess (one worker process) serves the whole module. It runs
on the test database the session created, reading a queue named for this run; the
tests use ``transaction=True`` so what they enqueue is committed and visible to it.
"""

from __future__ import annotations

import os

import pytest
from django.db import connection
from django_q.conf import Conf
from django_q.models import OrmQ, Task

import airlock
from airlock._context import hooks
from airlock.integrations.executors.django_q import django_q_executor
from tests.conftest import require_service
from tests.django_q_support import Worker, wait_for
from tests.django_q_support.tasks import child, parent, record, traced

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

QUEUE = f"airlock-tests-djq-{os.getpid()}"


@pytest.fixture(scope="module")
def worker(request, tmp_path_factory):
    """Start one qcluster for the module, on the session's test database."""
    if os.environ.get("AIRLOCK_TEST_DB", "postgres") != "postgres":
        pytest.skip("the qcluster subprocess needs a shared database; SQLite tests run in memory")
    require_service("postgres")
    request.getfixturevalue("django_db_setup")
    with pytest.MonkeyPatch.context() as patch:
        # The test process enqueues onto the queue the worker reads (get_broker() reads this).
        patch.setattr(Conf, "CLUSTER_NAME", QUEUE)
        with open(tmp_path_factory.mktemp("qcluster") / "qcluster.log", "w+b") as log:
            worker = Worker(connection.settings_dict["NAME"], QUEUE, log)
            try:
                yield worker
            finally:
                worker.stop()


def finished(worker: Worker, *, count: int, timeout: float = 20.0, **filters: object) -> list[Task]:
    """Wait until ``count`` finished tasks match ``filters``; return them in the order they ran."""

    def probe() -> list[Task] | None:
        tasks = list(Task.objects.filter(**filters).order_by("stopped"))
        return tasks if len(tasks) >= count else None

    return wait_for(probe, timeout=timeout, what=f"{count} finished task(s) matching {filters}", worker=worker)


def test_flushed_task_runs_once_with_its_args(worker):
    with airlock.scope(executor=django_q_executor) as scope:
        airlock.enqueue(record, 7, "x", force=True, _dispatch_options={"group": "flushed"})
    [task] = finished(worker, count=1, group="flushed")
    assert scope.is_flushed
    assert task.success, task.result
    assert task.func == "tests.django_q_support.tasks.record"
    assert task.result == {"args": [7, "x"], "kwargs": {"force": True}}
    assert Task.objects.filter(group="flushed").count() == 1
    wait_for(lambda: not OrmQ.objects.exists(), what="the broker to acknowledge the task", worker=worker)


def test_discarded_scope_never_reaches_the_broker(worker):
    with pytest.raises(RuntimeError), airlock.scope(executor=django_q_executor):
        airlock.enqueue(record, "discarded", _dispatch_options={"group": "discarded"})
        raise RuntimeError("the unit of work fails")
    assert not OrmQ.objects.exists()
    # A later task on the same single-worker queue runs; the discarded one never does.
    with airlock.scope(executor=django_q_executor):
        airlock.enqueue(record, "after", _dispatch_options={"group": "after-discard"})
    finished(worker, count=1, group="after-discard")
    assert not Task.objects.filter(group="discarded").exists()


def test_order_is_kept_within_one_flush(worker):
    with airlock.scope(executor=django_q_executor):
        for n in range(8):
            airlock.enqueue(record, n, _dispatch_options={"group": "ordered"})
    tasks = finished(worker, count=8, group="ordered")
    assert [task.result["args"][0] for task in tasks] == list(range(8))


def test_task_kwargs_named_like_options_reach_the_task(worker):
    kwargs = {"group": "mine", "timeout": 5, "task_name": "mine", "q_options": {"a": 1}, "func": "f"}
    with airlock.scope(executor=django_q_executor):
        airlock.enqueue(record, 1, **kwargs, _dispatch_options={"group": "reserved"})
    [task] = finished(worker, count=1, group="reserved")
    assert task.success, task.result
    assert task.result == {"args": [1], "kwargs": kwargs}


def test_follow_ups_go_out_only_after_the_wrapped_run_succeeds(worker):
    with airlock.scope(executor=django_q_executor):
        airlock.enqueue(parent, 1, _dispatch_options={"group": "parent-ok"})
    [run] = finished(worker, count=1, group="parent-ok")
    assert run.success, run.result
    assert run.result["children_queued_during_run"] == 0
    [follow_up] = finished(worker, count=1, func="tests.django_q_support.tasks.child")
    assert follow_up.success and follow_up.result == 1
    assert follow_up.id != run.id  # its own task, queued by the run: nothing configured the worker
    # The follow-up was queued (its package stamped) after the task's body had finished.
    assert follow_up.started >= run.result["body_done"]


def test_failed_wrapped_run_sends_no_follow_ups(worker):
    with airlock.scope(executor=django_q_executor):
        airlock.enqueue(parent, 2, fail=True, _dispatch_options={"group": "parent-fails"})
        airlock.enqueue(record, "sentinel", _dispatch_options={"group": "after-parent"})
    [run] = finished(worker, count=1, group="parent-fails")
    assert not run.success and "fails on purpose" in run.result
    finished(worker, count=1, group="after-parent")
    assert not Task.objects.filter(func="tests.django_q_support.tasks.child").exists()
    assert not any(row.task.get("func") is child for row in OrmQ.objects.all())


def test_trace_context_travels_to_the_worker(worker, monkeypatch):
    monkeypatch.setattr(hooks, "inject_trace", lambda carrier: carrier.update(traceparent="00-abc-01"))
    with airlock.scope(executor=django_q_executor):
        airlock.enqueue(traced, _dispatch_options={"group": "traced"})
    [task] = finished(worker, count=1, group="traced")
    assert task.result == [{"carrier": {"traceparent": "00-abc-01"}, "name": "traced", "system": "django_q"}]
