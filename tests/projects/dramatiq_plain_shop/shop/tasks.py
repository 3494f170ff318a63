"""The shop's actors, on the broker proj/dramatiq.py set up (``proj`` is imported before any app)."""

import dramatiq

from shop.ledger import record


@dramatiq.actor(max_retries=3, min_backoff=100)
def send_confirmation(order_id):
    record("send_confirmation", order_id)


@dramatiq.actor(max_retries=3, min_backoff=100)
def reserve_stock(order_id):
    record("reserve_stock", order_id)
