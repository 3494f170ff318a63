"""The ledger the tasks keep of their runs (what the tests count), and the id of the running task.

django-q2 gives a task function no handle on its own package; its ``pre_execute``
signal does, in the worker, just before the call. The id there is the outbox's
intent id, the same on every delivery, so ``deduplicate`` keys on it.
"""

import os
from contextvars import ContextVar

from django.db import transaction

from airlock.integrations.django.outbox import deduplicate
from shop.models import Delivery

running_task_id: ContextVar[str | None] = ContextVar("shop.running_task_id", default=None)


def remember_task_id(sender, func=None, task=None, **extra):
    """django-q2's ``pre_execute`` receiver (connected in ShopConfig.ready)."""
    running_task_id.set(task.get("id") if task else None)


@deduplicate(id_of=lambda: running_task_id.get())
def _first_run() -> bool:
    return True  # runs once per task id; a second delivery of it returns None


def record(task: str, order_id: int) -> None:
    with transaction.atomic():
        Delivery.objects.create(order_id=order_id, task=task, first=_first_run() is True, pid=os.getpid())
