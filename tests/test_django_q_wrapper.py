"""``@airlock_task``: a django-q2 task's run is a scope, and continues the enqueuer's trace.

In-process: direct calls, django-q2's own ``pre_execute`` signal, and django-q2's
``sync`` mode, which runs the package through its real worker and monitor code
in this process. The real cluster is in test_django_q_cluster.py.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django_q.models import Task
from django_q.signals import pre_execute

import airlock
from airlock._context import hooks
from airlock.integrations.django_q import TRACE_KEY, _running, airlock_task, call_task
from airlock.integrations.executors.django_q import django_q_executor
from tests.conftest import require_service
from tests.django_q_support import tasks


def follow_up(n: int) -> None:
    """Never called: the recording executor only notes it."""


@airlock_task
def succeeds(n: int) -> int:
    airlock.enqueue(follow_up, n)
    return n * 2


@airlock_task
def fails(n: int) -> None:
    airlock.enqueue(follow_up, n)
    raise ValueError("the task fails")


@airlock_task(policy=airlock.DropAll())
def drops(n: int) -> str:
    airlock.enqueue(follow_up, n)
    return "done"


@pytest.fixture(autouse=True)
def _forget_the_running_package():
    """pre_execute receivers note the package in this thread's context; clear it after each test."""
    yield
    _running.set(None)


@pytest.fixture
def sent() -> list[Any]:
    """The configured executor records what it is handed."""
    records: list[Any] = []
    airlock.configure(executor=lambda intent: records.append((intent.name, intent.args)))
    return records


@pytest.fixture
def continued(monkeypatch) -> list[dict[str, Any]]:
    """Record what the run hands to the tracing hook."""
    calls: list[dict[str, Any]] = []

    @contextmanager
    def continue_trace(carrier: Any, *, name: str, system: str) -> Iterator[None]:
        calls.append({"carrier": dict(carrier), "name": name, "system": system})
        yield

    monkeypatch.setattr(hooks, "continue_trace", continue_trace)
    return calls


def test_a_successful_run_flushes_through_the_configured_executor(sent):
    assert succeeds(3) == 6
    assert sent == [("follow_up", (3,))]


def test_a_failing_run_discards_and_reraises(sent):
    with pytest.raises(ValueError, match="the task fails"):
        fails(4)
    assert sent == []


def test_scope_arguments_are_passed_on(sent):
    assert drops(5) == "done"
    assert sent == []


def test_each_run_is_its_own_scope(sent):
    succeeds(1)
    with pytest.raises(ValueError):
        fails(2)
    succeeds(3)
    assert sent == [("follow_up", (1,)), ("follow_up", (3,))]
    assert airlock.get_current_scope() is None


def test_the_decorated_function_is_what_django_q2_imports():
    assert pickle.loads(pickle.dumps(succeeds)) is succeeds
    assert (succeeds.__module__, succeeds.__qualname__, succeeds.__name__) == (__name__, "succeeds", "succeeds")


def test_async_functions_are_refused():
    async def coroutine_task() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine_task: it is an async function"):
        airlock_task(coroutine_task)


def test_the_run_continues_the_trace_of_its_package(sent, continued):
    pre_execute.send(sender="django_q", func=succeeds, task={TRACE_KEY: {"traceparent": "00-abc-01"}})
    succeeds(1)
    succeeds(2)  # called again directly: the package was this run's, not the next one's
    assert continued == [
        {"carrier": {"traceparent": "00-abc-01"}, "name": "succeeds", "system": "django_q"},
        {"carrier": {}, "name": "succeeds", "system": "django_q"},
    ]


def test_a_carrier_meant_for_another_function_is_not_taken(sent, continued):
    pre_execute.send(sender="django_q", func=tasks.record, task={TRACE_KEY: {"traceparent": "00-abc-01"}})
    succeeds(1)
    assert continued[0]["carrier"] == {}


def test_call_task_hands_the_carrier_on(sent, continued):
    pre_execute.send(sender="django_q", func=call_task, task={TRACE_KEY: {"traceparent": "00-abc-01"}})
    assert call_task(succeeds, (2,), {}) == 4
    assert continued[0]["carrier"] == {"traceparent": "00-abc-01"}
    assert sent == [("follow_up", (2,))]


@pytest.mark.django_db
def test_sync_mode_runs_the_package_through_django_q2_in_process(monkeypatch, continued):
    """django-q2's ``sync`` option: pickled, signed, run by its worker, saved by its monitor."""
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        require_service("postgres")
    monkeypatch.setattr(hooks, "inject_trace", lambda carrier: carrier.update(traceparent="00-abc-01"))
    with airlock.scope(executor=django_q_executor) as scope:
        airlock.enqueue(succeeds, 21, _dispatch_options={"sync": True, "group": "sync"})
        airlock.enqueue(tasks.record, 1, group="kwarg", _dispatch_options={"sync": True})
    assert scope.is_flushed
    runs = {task.func: task for task in Task.objects.all()}
    assert runs[f"{__name__}.succeeds"].result == 42
    assert runs[f"{__name__}.succeeds"].group == "sync"
    assert runs["airlock.integrations.django_q.call_task"].result == {"args": [1], "kwargs": {"group": "kwarg"}}
    assert continued == [{"carrier": {"traceparent": "00-abc-01"}, "name": "succeeds", "system": "django_q"}]
