"""One request shape: commit one row in a transaction and send five tasks, in the variants compared.

``?token=`` names the request's batch: every task carries it, so a test counts
the deliveries of its own requests only.
"""

from __future__ import annotations

import os

from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

import airlock
from tests.djangoproject.shop.models import Order
from tests.servers.tasks import TASKS_PER_REQUEST, record


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _commit(token: str, tasks: int) -> None:
    with transaction.atomic():
        Order.objects.create(sku=token[:40])
        for number in range(tasks):
            airlock.enqueue(record, token, number)


def order(request: HttpRequest) -> HttpResponse:
    """One row and five tasks through airlock (the outbox, when it is on)."""
    _commit(request.GET["token"], TASKS_PER_REQUEST)
    return HttpResponse("ok")


def order_none(request: HttpRequest) -> HttpResponse:
    """The baseline: the same row, no task."""
    with transaction.atomic():
        Order.objects.create(sku=request.GET["token"][:40])
    return HttpResponse("ok")


def order_celery(request: HttpRequest) -> HttpResponse:
    """Celery's own answer: ``delay_on_commit`` publishes after the commit, inside the request."""
    token = request.GET["token"]
    with transaction.atomic():
        Order.objects.create(sku=token[:40])
        for number in range(TASKS_PER_REQUEST):
            record.delay_on_commit(token, number)
    return HttpResponse("ok")


async def order_async(request: HttpRequest) -> HttpResponse:
    """An async view: the row from the event loop, the tasks enqueued there too (sent at the flush)."""
    token = request.GET["token"]
    await Order.objects.acreate(sku=token[:40])
    for number in range(TASKS_PER_REQUEST):
        airlock.enqueue(record, token, number)
    return HttpResponse("ok")


def publisher(request: HttpRequest) -> JsonResponse:
    """Send the request's tasks, then say which process answered and what its publisher is."""
    _commit(request.GET["token"], TASKS_PER_REQUEST)
    return JsonResponse({"pid": os.getpid(), **describe_publisher()})


def describe_publisher() -> dict[str, object]:
    """This process's background publisher: its pid and its thread, as seen from this process."""
    from airlock.integrations.django.outbox import background_publisher

    found = background_publisher()
    if found is None:
        return {"publisher": None}
    thread = found.thread
    return {
        "publisher": {"pid": found.pid, "thread": thread.native_id, "alive": thread.is_alive(), "name": thread.name},
        "depth": found.depth,
    }


def warm(wait: bool) -> None:
    """Hand one intent to the publisher at import (a ``--preload`` master then has a live one)."""
    from airlock.integrations.django.outbox import background_publisher

    with airlock.scope():
        _commit("warm-up", 1)
    publisher = background_publisher()
    if wait and publisher is not None:
        publisher.drain(10.0)
    # A database connection opened before a fork must not be shared by the children.
    connections.close_all()
