"""The shop's actors, on the broker django_dramatiq set up from DRAMATIQ_BROKER."""

import dramatiq

from shop.ledger import record


@dramatiq.actor(max_retries=3, min_backoff=100)
def send_confirmation(order_id):
    record("send_confirmation", order_id)


@dramatiq.actor(max_retries=3, min_backoff=100)
def reserve_stock(order_id):
    record("reserve_stock", order_id)
