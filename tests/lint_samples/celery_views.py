"""A Django view module of a Celery code base, before airlock (AIR001, AIR002, AIR007, AIR010, AIR020)."""

from functools import partial

from celery import chain, shared_task
from django.db import transaction
from django.shortcuts import get_object_or_404

from shop.models import Order
from shop.tasks import notify_warehouse, send_confirmation


@shared_task
def archive(order_id):
    pass


def checkout(request):
    order = Order.objects.create(user=request.user)
    send_confirmation.delay(order.id)  # expect: AIR001
    send_confirmation.delay(order.id, template="receipt")  # expect: AIR001
    notify_warehouse.apply_async((order.id,), {"rush": True}, countdown=60, queue="slow")  # expect: AIR002
    notify_warehouse.apply_async(args=[order.id], kwargs={"rush": False})  # expect: AIR002
    archive.apply_async(countdown=10)  # expect: AIR002
    send_confirmation.delay_on_commit(order.id)  # expect: AIR007
    transaction.on_commit(lambda: send_confirmation.delay(order.id))  # expect: AIR010
    transaction.on_commit(partial(notify_warehouse.apply_async, (order.id,), countdown=5))  # expect: AIR010
    send_confirmation.delay(order)  # expect: AIR001 AIR020
    transaction.on_commit(lambda: archive.delay(order))  # expect: AIR010 AIR020
    chain(archive.s(1), archive.s(2)).delay()  # a canvas: not judged
    return order


def refund(request, pk):
    order = get_object_or_404(Order, pk=pk)
    send_confirmation.delay(order_id=order.pk, user=request.user)  # expect: AIR001 AIR020
    archive.delay(order.pk)  # noqa: AIR001
    archive.delay(order.pk)  # noqa
    archive.delay(order.pk)  # noqa: E501  (another code: still reported)  # expect: AIR001
