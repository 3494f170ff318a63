"""A management command that enqueues one reminder per order, run in an airlock scope."""

from __future__ import annotations

from typing import Any

import airlock
from airlock.integrations.django import AirlockCommand
from tests.djangoproject.shop import tasks
from tests.djangoproject.shop.models import Order


class Command(AirlockCommand):
    help = "Enqueue a confirmation for every order (or for the given SKU only)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--sku", default=None)
        parser.add_argument("--fail", action="store_true", help="raise after enqueueing")

    def handle(self, *args: Any, **options: Any) -> str:
        orders = Order.objects.order_by("pk")
        if options["sku"]:
            orders = orders.filter(sku=options["sku"])
        for order in orders:
            airlock.enqueue(tasks.send_confirmation, order.pk)
        if options["fail"]:
            raise RuntimeError("remind_orders failed after enqueueing")
        return f"{len(orders)} order(s), dry run: {options['airlock_dry_run']}"
