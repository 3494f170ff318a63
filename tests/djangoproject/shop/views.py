"""Views for the middleware tests: sync and async, with and without explicit transactions.

Query string switches: ``status=<code>`` sets the response status after the
enqueue, ``fail=1`` raises after the enqueue, ``rollback=1`` (atomic views)
rolls the transaction back after the enqueue and still answers 200.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse

import airlock
from tests.djangoproject.shop import tasks
from tests.djangoproject.shop.models import Order


class Rollback(Exception):
    pass


def _answer(request: HttpRequest, order_id: int | None) -> HttpResponse:
    if request.GET.get("fail"):
        raise RuntimeError("the view failed after enqueueing")
    return HttpResponse(str(order_id), status=int(request.GET.get("status", 201)))


def _create_and_enqueue(sku: str) -> int:
    order = Order.objects.create(sku=sku)
    airlock.enqueue(tasks.send_confirmation, order.pk)
    return order.pk


def _create_in_atomic(request: HttpRequest) -> int | None:
    try:
        with transaction.atomic():
            order_id = _create_and_enqueue(request.GET.get("sku", "tea"))
            if request.GET.get("rollback"):
                raise Rollback
    except Rollback:
        return None
    return order_id


def checkout(request: HttpRequest) -> HttpResponse:
    """The view docs/django.md's TestCase example posts to."""
    order = Order.objects.create(sku=request.POST["sku"])
    airlock.enqueue(tasks.send_confirmation, order.pk)
    return HttpResponse(status=201)


def create_order(request: HttpRequest) -> HttpResponse:
    """Autocommit, or the request's transaction when ATOMIC_REQUESTS is on."""
    return _answer(request, _create_and_enqueue(request.GET.get("sku", "tea")))


def create_order_atomic(request: HttpRequest) -> HttpResponse:
    return _answer(request, _create_in_atomic(request))


def create_order_naive(request: HttpRequest) -> HttpResponse:
    """What airlock replaces: hand the task to the executor inside the transaction."""
    executor = airlock.get_configuration()["executor"]
    with transaction.atomic():
        order = Order.objects.create(sku=request.GET.get("sku", "tea"))
        executor(airlock.Intent(tasks.send_confirmation, (order.pk,)))
        # Still inside the transaction while the worker looks for the row.
        executor.wait_idle()
    return _answer(request, order.pk)


async def create_order_async(request: HttpRequest) -> HttpResponse:
    order = await Order.objects.acreate(sku=request.GET.get("sku", "tea"))
    airlock.enqueue(tasks.send_confirmation, order.pk)
    return _answer(request, order.pk)


async def create_order_async_atomic(request: HttpRequest) -> HttpResponse:
    return _answer(request, await sync_to_async(_create_in_atomic)(request))
