"""Tasks the ``db_worker`` (and the in-process backends) run; module level, so a worker imports them.

They are bound to ``airlock_db`` (an ``AirlockBackend`` wrapping django-tasks-db's
``DatabaseBackend``); the tests move them to other backends with ``.using(backend=...)``.
Each run that counts writes an ``Order`` row named after its label, so a test can
count how often a task really ran.
"""

from __future__ import annotations

from typing import Any

from django.tasks import task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

import airlock
from airlock.integrations.django_tasks import airlock_task
from tests.djangoproject.shop.models import Order
from tests.otel_django_q_tasks import spans_report

BACKEND = "airlock_db"


@task(backend=BACKEND)
def record(label: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Write one order named ``label`` and report the arguments the worker called it with."""
    Order.objects.create(sku=label)
    return {"args": list(args), "kwargs": kwargs, "ran_at": timezone.now().isoformat()}


@task(backend=BACKEND)
def child(label: str) -> str:
    Order.objects.create(sku=label)
    return label


def _children_stored(*labels: str) -> int:
    return DBTaskResult.objects.filter(task_path=child.module_path, args_kwargs__args__0__in=labels).count()


@task(backend=BACKEND)
def parent(label: str, *, fail: bool = False) -> dict[str, Any]:
    """Enqueue two follow-ups (a plain ``.enqueue()`` and ``airlock.enqueue``); report whether
    either reached the backend while the run was still going."""
    child.enqueue(f"{label}-plain")
    airlock.enqueue(child, f"{label}-airlock")
    stored = _children_stored(f"{label}-plain", f"{label}-airlock")
    if fail:
        raise RuntimeError(f"parent({label!r}) fails on purpose")
    return {"children_stored_during_run": stored, "body_done": timezone.now().isoformat()}


@task(backend=BACKEND, takes_context=True)
def with_context(context: Any, label: str) -> dict[str, Any]:
    """A ``takes_context`` task: report what the context says, and enqueue a follow-up."""
    child.enqueue(f"{label}-after-context")
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "children_stored_during_run": _children_stored(f"{label}-after-context"),
    }


@airlock_task(backend=BACKEND)
def decorated_parent(label: str, *, fail: bool = False) -> dict[str, Any]:
    """``parent``, declared with airlock_task: the scope is the wrapper's."""
    child.enqueue(f"{label}-plain")
    airlock.enqueue(child, f"{label}-airlock")
    stored = _children_stored(f"{label}-plain", f"{label}-airlock")
    if fail:
        raise RuntimeError(f"decorated_parent({label!r}) fails on purpose")
    return {"children_stored_during_run": stored, "scope": type(airlock.get_current_scope()).__name__}


@airlock_task(backend=BACKEND, takes_context=True)
def decorated_with_context(context: Any, label: str) -> dict[str, Any]:
    child.enqueue(f"{label}-after-context")
    return {"attempt": context.attempt, "children_stored_during_run": _children_stored(f"{label}-after-context")}


@airlock_task(backend=BACKEND)
def traced(token: str) -> dict[str, Any]:
    """Report the current trace and the spans this process started (the worker sets up a
    tracer when ``AIRLOCK_OTEL_WORKER=1``, see ``tests/otel_django_q_tasks.py``)."""
    return spans_report(token)


@task(backend=BACKEND)
async def async_parent(label: str, *, fail: bool = False) -> int:
    """An ``async def`` task: its follow-up is held by the run's scope like any other."""
    await child.aenqueue(f"{label}-plain")
    if fail:
        raise RuntimeError(f"async_parent({label!r}) fails on purpose")
    return 1


@airlock_task(backend=BACKEND)
async def decorated_async_parent(label: str, *, fail: bool = False) -> int:
    await child.aenqueue(f"{label}-plain")
    if fail:
        raise RuntimeError(f"decorated_async_parent({label!r}) fails on purpose")
    return 1
