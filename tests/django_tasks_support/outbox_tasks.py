"""``django.tasks`` tasks the outbox tests send; module level, so the ``db_worker`` imports them.

``once`` and ``once_now`` drop duplicate deliveries with ``deduplicate``: each run
that gets through writes an ``Order`` named after its label, so a test counts the
real runs. ``once`` is bound to ``airlock_db`` (django-tasks-db, served by the test's
``db_worker``); ``once_now`` to ``default``, the ``ImmediateBackend``, which runs it
in the process that sends it. ``plain`` is a plain ``@task``: it is delivered, but
never learns its intent id. ``outer_now`` runs ``inner_now`` in-process inside its
own run, to show the inner run does not see the outer one's id. ``unlisted`` is left
out of ``OUTBOX["TASKS"]``. ``async_now`` is an ``async def`` ``airlock_task``.
"""

from __future__ import annotations

from typing import Any

from django.tasks import task

from airlock.integrations.django.outbox import deduplicate
from airlock.integrations.django.outbox._dedupe import current_intent_id
from airlock.integrations.django_tasks import airlock_task
from tests.djangoproject.shop.models import Order

BACKEND = "airlock_db"
LISTED = [
    "tests.django_tasks_support.outbox_tasks.once",
    "tests.django_tasks_support.outbox_tasks.once_now",
    "tests.django_tasks_support.outbox_tasks.plain",
    "tests.django_tasks_support.outbox_tasks.outer_now",
    "tests.django_tasks_support.outbox_tasks.async_now",
]


@airlock_task(backend=BACKEND)
@deduplicate
def once(label: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Write the order ``label`` once per intent id; report the id and the arguments."""
    Order.objects.create(sku=label)
    return {"intent_id": current_intent_id(), "args": list(args), "kwargs": kwargs}


@airlock_task
@deduplicate
def once_now(label: str) -> str | None:
    Order.objects.create(sku=label)
    return current_intent_id()


@task(backend=BACKEND)
def plain(label: str, **kwargs: Any) -> dict[str, Any]:
    Order.objects.create(sku=label)
    return {"kwargs": kwargs, "intent_id": current_intent_id()}


@task
def inner_now() -> str | None:
    return current_intent_id()


@airlock_task
def outer_now() -> dict[str, Any]:
    """Run ``inner_now`` on the ImmediateBackend, inside this run; report both runs' intent ids."""
    inner = inner_now.enqueue()
    return {"outer": current_intent_id(), "inner": inner.return_value, "outer_after": current_intent_id()}


@airlock_task
async def async_now() -> str | None:
    """An ``async def`` task: its run sees its intent id the same way."""
    return current_intent_id()


@task(backend=BACKEND)
def unlisted(label: str) -> str:
    Order.objects.create(sku=label)
    return label
