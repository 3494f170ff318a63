"""An order, and the ledger the tasks keep of their runs (what the tests count)."""

import time

from django.db import models

import airlock


class Order(models.Model):
    token = models.CharField(max_length=40, db_index=True)

    def save(self, *args, **kwargs):
        created = self._state.adding
        super().save(*args, **kwargs)
        if created:
            # Imported here, as a model that enqueues does: nothing imports shop.tasks
            # at start-up, so only the relay's own discovery can find the actor.
            from shop.tasks import send_confirmation

            airlock.enqueue(send_confirmation, self.pk)


class Delivery(models.Model):
    """One delivery of one task for one order; ``first`` unless it was a duplicate."""

    order_id = models.BigIntegerField(db_index=True)
    task = models.CharField(max_length=40)
    first = models.BooleanField()
    pid = models.IntegerField()
    ran_at = models.FloatField(default=time.time)  # seconds since the epoch: the tests time recoveries with it
