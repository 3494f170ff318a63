"""Which executor a task-run scope sends its follow-ups with: explicit, else configured, else its own queue's.

Each backend's task-run scope is opened in-process here (eager Celery, Dramatiq's
``StubBroker`` with a real worker, ``MemoryHuey`` in immediate mode, a direct
call of a django-q2 task); the real workers are in the backends' end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from celery import Celery
from dramatiq.brokers.stub import StubBroker
from huey import MemoryHuey

import airlock
from airlock._intent import Intent
from airlock.integrations.celery import AirlockTask
from airlock.integrations.django_q import airlock_task as django_q_task
from airlock.integrations.dramatiq import AirlockMiddleware
from airlock.integrations.executors.celery import celery_executor
from airlock.integrations.executors.django_q import django_q_executor
from airlock.integrations.executors.dramatiq import dramatiq_executor
from airlock.integrations.executors.huey import huey_executor
from airlock.integrations.huey import airlock_task as huey_task

Executor = Callable[[Intent], Any]
# A run reports the executor its follow-up would be sent with.
Run = Callable[[Executor | None], Executor]


def explicit_executor(intent: Intent) -> None: ...


def configured_executor(intent: Intent) -> None: ...


def outer_executor(intent: Intent) -> None: ...


def follow_up() -> None: ...


def _seen() -> Executor:
    scope = airlock.get_current_scope()
    assert scope is not None, "the task body ran outside a scope"
    with airlock.policy(airlock.DropAll()):  # never sent: which executor would send it is the point
        intent = airlock.enqueue(follow_up)
    return scope.executor_for(intent)


def run_celery(explicit: Executor | None) -> Executor:
    app = Celery("airlock_task_run", set_as_current=False)
    app.conf.update(task_always_eager=True, broker_url="memory://")
    seen: list[Executor] = []

    @app.task(base=AirlockTask, shared=False, airlock_executor=explicit)
    def body() -> None:
        seen.append(_seen())

    body.delay()
    return seen[0]


def run_dramatiq(explicit: Executor | None) -> Executor:
    broker = StubBroker()
    broker.add_middleware(AirlockMiddleware(executor=explicit))
    seen: list[Executor] = []

    @dramatiq.actor(broker=broker)
    def body() -> None:
        seen.append(_seen())

    body.send()
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join(body.queue_name, timeout=5_000)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    return seen[0]


def run_huey(explicit: Executor | None) -> Executor:
    huey = MemoryHuey("airlock-task-run", immediate=True)
    seen: list[Executor] = []

    @huey_task(huey, executor=explicit)
    def body() -> None:
        seen.append(_seen())

    body()
    return seen[0]


def run_django_q(explicit: Executor | None) -> Executor:
    seen: list[Executor] = []

    @django_q_task(executor=explicit)
    def body() -> None:
        seen.append(_seen())

    body()
    return seen[0]


BACKENDS = [
    (run_celery, celery_executor),
    (run_dramatiq, dramatiq_executor),
    (run_huey, huey_executor),
    (run_django_q, django_q_executor),
]
IDS = ["celery", "dramatiq", "huey", "django_q"]


@pytest.mark.parametrize(("run", "own_queue"), BACKENDS, ids=IDS)
def test_a_run_defaults_to_its_own_queue(run: Run, own_queue: Executor) -> None:
    assert run(None) is own_queue


@pytest.mark.parametrize(("run", "own_queue"), BACKENDS, ids=IDS)
def test_a_configured_executor_wins_over_the_own_queue(run: Run, own_queue: Executor) -> None:
    airlock.configure(executor=configured_executor)
    assert run(None) is configured_executor


@pytest.mark.parametrize(("run", "own_queue"), BACKENDS, ids=IDS)
def test_an_explicit_executor_wins_over_the_configured_one(run: Run, own_queue: Executor) -> None:
    airlock.configure(executor=configured_executor)
    # Not bound to the task either: a function given as Celery's airlock_executor stays that function.
    assert run(explicit_executor) is explicit_executor


IN_PROCESS = [backend for backend in BACKENDS if backend[0] is not run_dramatiq]
IN_PROCESS_IDS = [name for name in IDS if name != "dramatiq"]


@pytest.mark.parametrize(("run", "own_queue"), IN_PROCESS, ids=IN_PROCESS_IDS)
def test_a_run_nested_in_another_scope_keeps_its_own_queue(run: Run, own_queue: Executor) -> None:
    """Called in-process inside a scope that chose an executor, the run still chose its own queue."""
    with airlock.scope(executor=outer_executor):
        assert run(None) is own_queue
        assert run(explicit_executor) is explicit_executor


@pytest.mark.parametrize(("run", "own_queue"), IN_PROCESS, ids=IN_PROCESS_IDS)
def test_a_configured_executor_is_a_default_that_an_enclosing_choice_overrides(run: Run, own_queue: Executor) -> None:
    airlock.configure(executor=configured_executor)
    with airlock.scope(executor=outer_executor):
        assert run(None) is outer_executor
