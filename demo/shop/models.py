"""The demo shop's tables: its orders, and what the consumer did with them."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    customer = models.CharField(max_length=100)
    total = models.IntegerField()

    class Meta:
        app_label = "shop"

    def __str__(self) -> str:
        return f"order {self.pk} for {self.customer}"


class Delivery(models.Model):
    """One task run: which task, for which order, and what it found of the order."""

    task = models.CharField(max_length=100)
    order_id = models.BigIntegerField(null=True)
    found = models.CharField(max_length=100, blank=True)  # the order as the task read it; "" if missing
    where = models.CharField(max_length=20)  # "consumer" or "web"

    class Meta:
        app_label = "shop"

    def __str__(self) -> str:
        where = "on the consumer" if self.where == "consumer" else "in the web process"
        if self.order_id is None:
            return f"{self.task} ran {where}"
        found = f"found {self.found}" if self.found else f"order {self.order_id} MISSING"
        return f"{self.task} ran {where}: {found}"
