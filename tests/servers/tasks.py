"""The Celery app and tasks of the served project.

``record`` is the consumer the tests count on: each run notes its task id in Redis
twice, once per delivery (``<token>:delivered``) and once per first delivery, after
dropping duplicates with the outbox's database-backed ``first_delivery``
(``<token>:ran``). ``fanout`` is a task whose follow-ups go through airlock: the
worker is a process model of its own.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from django.conf import settings
from django.db import transaction

import airlock
from airlock.integrations.celery import AirlockTask
from airlock.integrations.django.outbox import first_delivery
from tests.djangoproject.shop.models import Order
from tests.servers.keys import delivered_key, ran_key

TASKS_PER_REQUEST = 5

app = Celery("airlock_servers", broker=settings.BROKER, set_as_current=False)
app.conf.update(
    task_default_queue=settings.QUEUE,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    # No publish-side reconnect loop (docs/reliability.md): a frozen broker times out.
    broker_transport_options={
        "socket_timeout": float(os.environ.get("AIRLOCK_SERVERS_SOCKET_TIMEOUT", "2.0")),
        "socket_connect_timeout": 1.0,
        "max_retries": 0,
        **({"global_keyprefix": settings.KEYPREFIX} if settings.KEYPREFIX else {}),
    },
)

_client: list[redis.Redis] = []


def counts() -> redis.Redis:
    """A client of the broker's Redis, made once per process (after any fork)."""
    if not _client:
        _client.append(redis.Redis.from_url(settings.BROKER, socket_timeout=5))
    return _client[0]


@app.task(name="servers.record", bind=True, shared=False)
def record(self: Any, token: str, number: int) -> None:
    task_id = self.request.id
    counts().hincrby(delivered_key(token), task_id, 1)
    with transaction.atomic():
        if first_delivery(task_id):
            counts().hincrby(ran_key(token), task_id, 1)


def commit_follow_ups(token: str, count: int) -> None:
    """Commit a row and enqueue ``count`` follow-ups (``record``), as a web request does."""
    with transaction.atomic():
        Order.objects.create(sku=token[:40])
        for number in range(count):
            airlock.enqueue(record, token, number)


@app.task(name="servers.fanout", bind=True, base=AirlockTask, shared=False)
def fanout(self: Any, token: str, count: int = TASKS_PER_REQUEST) -> None:
    """A Celery task whose run is an airlock scope: its follow-ups go when it succeeds."""
    commit_follow_ups(token, count)
