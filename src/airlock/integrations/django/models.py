"""The app's models, all of them the outbox's (see :mod:`airlock.integrations.django.outbox`)."""

from airlock.integrations.django.outbox._models import OutboxMessage, ProcessedIntent

__all__ = ["OutboxMessage", "ProcessedIntent"]
