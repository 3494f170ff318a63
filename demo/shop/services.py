"""Services the checkout calls, each opening a scope of its own, as libraries do.

Nested scopes do not send anything themselves: the outermost scope (the request's)
captures what they enqueued and decides when it goes, after its commit. A scope
that chose an executor keeps it (the audit trail below is written in-process),
one that did not goes the request's way (the queue).
"""

from __future__ import annotations

import airlock
from airlock.integrations.executors.sync import sync_executor
from demo.shop import tasks
from demo.shop.models import Order


def award_loyalty_points(order: Order) -> None:
    """The loyalty service: a plain nested scope, so its task goes through the queue."""
    with airlock.scope():
        airlock.enqueue(tasks.award_points, order.pk, order.total // 10)


def record_audit(order: Order) -> None:
    """The audit service: its scope chooses the in-process executor, and keeps it when nested."""
    with airlock.scope(executor=sync_executor, outbox=False):
        airlock.enqueue(tasks.write_audit, order.pk, "checkout")
