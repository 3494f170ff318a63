"""The demo shop's one table."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    customer = models.CharField(max_length=100)
    total = models.IntegerField()

    class Meta:
        app_label = "shop"

    def __str__(self) -> str:
        return f"order {self.pk} for {self.customer}"
