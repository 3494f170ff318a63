"""A model that enqueues from save(): the instance itself must not be the argument (AIR020)."""

import airlock
from django.db import models

from .tasks import index_order


class Order(models.Model):
    total = models.IntegerField()

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        airlock.enqueue(index_order, self)  # expect: AIR020
        airlock.enqueue(index_order, self.pk)
        airlock.enqueue(index_order, order=self, _dispatch_options={"countdown": 5})  # expect: AIR020


def reprice(pk):
    order = Order.objects.get(pk=pk)
    other, created = Order.objects.get_or_create(pk=pk + 1)
    with airlock.scope():
        airlock.enqueue(index_order, order)  # expect: AIR020
        airlock.enqueue(index_order, other)  # expect: AIR020
        airlock.enqueue(index_order, order.pk, created)
