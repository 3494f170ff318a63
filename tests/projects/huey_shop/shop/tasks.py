"""The shop's tasks, djhuey's. Each run notes its delivery and whether it is the first of its task id."""

import os

from django.db import transaction
from huey.contrib.djhuey import db_task

from airlock.integrations.django.outbox import first_delivery
from shop.models import Delivery


def _record(task: str, order_id: int, task_id: str) -> None:
    with transaction.atomic():
        Delivery.objects.create(order_id=order_id, task=task, first=first_delivery(task_id), pid=os.getpid())


@db_task(context=True)
def send_confirmation(order_id, task=None):
    _record("send_confirmation", order_id, task.id)


@db_task(context=True)
def reserve_stock(order_id, task=None):
    _record("reserve_stock", order_id, task.id)
