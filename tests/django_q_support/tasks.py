"""Task functions the django-q2 worker imports (module level, so it can)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

import airlock
from airlock._context import hooks
from airlock.integrations.django_q import airlock_task

# What the worker's tracing hook was handed, for ``traced`` to report back.
_continued: list[dict[str, Any]] = []


def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Report the arguments the worker called it with."""
    return {"args": list(args), "kwargs": kwargs}


def child(n: int) -> int:
    return n


@airlock_task
def parent(n: int, *, fail: bool = False) -> dict[str, Any]:
    """Enqueue ``child(n)`` and report whether it reached the broker during the run."""
    airlock.enqueue(child, n)
    queued = sum(1 for row in OrmQ.objects.all() if row.task.get("func") is child)
    if fail:
        raise RuntimeError(f"parent({n}) fails on purpose")
    return {"children_queued_during_run": queued, "body_done": timezone.now()}


@airlock_task
def traced() -> list[dict[str, Any]]:
    """Report the carrier and names the tracing hook was given for this run."""
    return list(_continued)


@contextmanager
def _record_continue(carrier: Any, *, name: str, system: str) -> Iterator[None]:
    _continued[:] = [{"carrier": dict(carrier), "name": name, "system": system}]
    yield


# Only the worker subprocess traces this way; the test process keeps its hooks clean.
if settings.SETTINGS_MODULE == "tests.django_q_support.settings":
    hooks.continue_trace = _record_continue
