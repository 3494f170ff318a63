"""The shop's tasks, declared on the chosen queue (Huey by default, Celery with ``--celery``).

``@task`` is ``airlock_task(huey)`` or ``app.task(base=AirlockTask)``: each run is an
airlock scope, so what a task enqueues goes out only once the task has succeeded.
"""

from __future__ import annotations

import threading

import airlock
from demo.queues import task
from demo.shop.models import Delivery, Order


def record(task_name: str, order_id: int | None) -> Order | None:
    """Write down that ``task_name`` ran, and whether it found the order (it must: it was committed)."""
    order = None if order_id is None else Order.objects.filter(pk=order_id).first()
    where = "web" if threading.current_thread() is threading.main_thread() else "consumer"
    Delivery.objects.create(task=task_name, order_id=order_id, found=str(order or ""), where=where)
    return order


@task
def send_confirmation(order_id: int) -> None:
    """E-mail the customer, then tell the warehouse: a follow-up, sent once this run succeeds."""
    if record("send_confirmation", order_id) is not None:
        airlock.enqueue(notify_warehouse, order_id)


@task
def notify_warehouse(order_id: int) -> None:
    record("notify_warehouse", order_id)


@task
def send_reminder(order_id: int) -> None:
    record("send_reminder", order_id)


@task
def refresh_stock() -> None:
    record("refresh_stock", None)


@task
def award_points(order_id: int, points: int) -> None:
    record("award_points", order_id)


def write_audit(order_id: int, event: str) -> None:
    """Not a queue task: the audit service runs it in the web process (see services.py)."""
    record("write_audit", order_id)
