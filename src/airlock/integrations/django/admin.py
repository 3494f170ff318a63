"""The outbox in the Django admin (found by ``django.contrib.admin``'s autodiscovery)."""

from django.contrib import admin  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox._admin import OutboxMessageAdmin
from airlock.integrations.django.outbox._models import OutboxMessage

admin.site.register(OutboxMessage, OutboxMessageAdmin)
