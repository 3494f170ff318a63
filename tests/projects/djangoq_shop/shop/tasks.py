"""The shop's tasks: plain functions, which django-q2 imports by path in its workers."""

from shop.ledger import record


def send_confirmation(order_id):
    record("send_confirmation", order_id)


def reserve_stock(order_id):
    record("reserve_stock", order_id)
