"""The admin's view of the outbox: every row by state, and requeue as an action."""

from __future__ import annotations

from typing import Any

from django.contrib import admin  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox._models import DEAD, HELD, READY, OutboxMessage
from airlock.integrations.django.outbox._relay import requeue

__all__ = ["OutboxMessageAdmin", "requeue_rows"]


@admin.action(description="Requeue the selected dead or held rows")  # type: ignore[untyped-decorator]
def requeue_rows(modeladmin: Any, request: Any, queryset: Any) -> None:
    """Make the selected dead or held rows ready again (others are left as they are)."""
    using = queryset.db
    ids = list(queryset.filter(state__in=[DEAD, HELD]).values_list("intent_id", flat=True))
    count = requeue(using, intent_ids=ids) if ids else 0
    modeladmin.message_user(request, f"{count} row(s) are {READY} again; the relay will publish them.")


class OutboxMessageAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Pending, ready, held, sent and dead rows, searchable by intent id and task."""

    list_display = ("intent_id", "task", "executor", "state", "attempts", "last_error")
    list_filter = ("state", "executor")
    search_fields = ("intent_id", "task")
    ordering = ("-id",)
    actions = (requeue_rows,)
    readonly_fields = tuple(field.name for field in OutboxMessage._meta.fields)

    def has_add_permission(self, request: Any) -> bool:
        return False
