"""The shop's tasks. Each run notes its delivery; ``deduplicate`` says whether it is the first."""

import os

from celery import shared_task
from django.db import transaction

from airlock.integrations.django.outbox import deduplicate
from shop.models import Delivery


@deduplicate
def _first_run() -> bool:
    return True  # runs once per task id; a second delivery of it returns None


def _record(task: str, order_id: int) -> None:
    with transaction.atomic():
        Delivery.objects.create(order_id=order_id, task=task, first=_first_run() is True, pid=os.getpid())


@shared_task
def send_confirmation(order_id):
    _record("send_confirmation", order_id)


@shared_task
def reserve_stock(order_id):
    _record("reserve_stock", order_id)
