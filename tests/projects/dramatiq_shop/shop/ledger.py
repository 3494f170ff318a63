"""The ledger the tasks keep of their runs (what the tests count).

Each delivery is a row; ``first`` says whether ``deduplicate`` (keyed on the
message id, which is the outbox's intent id: the CurrentMessage middleware
exposes it) ran its body, so a second delivery of one message shows as a
second row with ``first`` false.
"""

import os

from django.db import transaction

from airlock.integrations.django.outbox import deduplicate
from shop.models import Delivery


@deduplicate
def _first_run() -> bool:
    return True  # runs once per message id; a second delivery of it returns None


def record(task: str, order_id: int) -> None:
    with transaction.atomic():
        Delivery.objects.create(order_id=order_id, task=task, first=_first_run() is True, pid=os.getpid())
