"""The ledger the tasks keep of their runs (what the tests count).

Each delivery is a row; ``first`` says whether ``deduplicate`` ran its body. It
keys on the outbox's intent id, which reaches a task declared with ``airlock_task``
as a keyword argument the wrapper takes off (a backend's result id is its own), so
a second delivery of one row shows as a second row with ``first`` false.
"""

import os

from django.db import transaction

from airlock.integrations.django.outbox import deduplicate
from shop.models import Delivery


@deduplicate
def _first_run() -> bool:
    return True  # runs once per intent id; a second delivery of it returns None


def record(task: str, order_id: int) -> None:
    with transaction.atomic():
        Delivery.objects.create(order_id=order_id, task=task, first=_first_run() is True, pid=os.getpid())
