"""The one model the Django tests write: an order that tasks look up after commit."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    sku = models.CharField(max_length=40)

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.sku})"
