"""Checkout: an order committed with its tasks; one rolled back after it enqueued.

The tasks are imported inside the views (and the model's save()), never at module
level, so the URL system check imports no task module: the relay must find them itself.
"""

import os
import signal

from django.db import transaction
from django.http import HttpResponse

import airlock
from shop.models import Order


class PaymentDeclined(Exception):
    pass


def ping(request):
    return HttpResponse("ok")


def order(request):
    from shop.tasks import reserve_stock

    with transaction.atomic():
        placed = Order.objects.create(token=request.GET["token"])  # save() enqueues send_confirmation
        airlock.enqueue(reserve_stock, placed.pk)
    if request.GET.get("crash") == "after-commit":
        # The test's fault: this worker dies after its COMMIT, before its scope decides.
        os.kill(os.getpid(), signal.SIGKILL)
    return HttpResponse(str(placed.pk))


def order_rolled_back(request):
    """The payment is declined inside the transaction: the request fails with a 500."""
    from shop.tasks import reserve_stock

    with transaction.atomic():
        placed = Order.objects.create(token=request.GET["token"])
        airlock.enqueue(reserve_stock, placed.pk)
        raise PaymentDeclined(f"order {placed.pk}")
