"""Tasks the shop enqueues. Each needs the order row to exist, as a real worker would."""

from __future__ import annotations

from tests.djangoproject.shop.models import Order


def send_confirmation(order_id: int, *, using: str = "default") -> str:
    """Read the order (raises ``Order.DoesNotExist`` if it is not committed yet)."""
    return Order.objects.using(using).get(pk=order_id).sku


def notify_warehouse(order_id: int) -> int:
    return order_id
