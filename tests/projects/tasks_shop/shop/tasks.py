"""The shop's tasks: ``django.tasks`` tasks, declared with ``airlock_task`` so that the intent id reaches them."""

from airlock.integrations.django_tasks import airlock_task
from shop.ledger import record


@airlock_task
def send_confirmation(order_id):
    record("send_confirmation", order_id)


@airlock_task
def reserve_stock(order_id):
    record("reserve_stock", order_id)
