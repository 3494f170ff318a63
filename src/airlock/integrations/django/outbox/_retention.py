"""Retention: sent rows and processed-intent records older than ``RETENTION`` go, a batch at a time.

The relay calls these (``Relay.apply_retention``); ``airlock_purge`` remains for
a one-off cleanup. Each batch is two short statements in autocommit: a
``SELECT`` of at most ``limit`` keys, then a ``DELETE`` of those keys that still
match. No statement holds a lock for long, the same SQL runs on PostgreSQL,
MariaDB/MySQL and SQLite (MariaDB refuses ``LIMIT`` inside an ``IN`` subquery),
and two relays deleting at once only find some keys already gone.
"""

from __future__ import annotations

from datetime import datetime, timezone

from django.conf import settings  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox._models import SENT, OutboxMessage, ProcessedIntent

__all__ = ["PURGE_BATCH", "as_datetime", "purge_processed", "purge_sent"]

# Keys per statement: one batch's DELETE carries them all as parameters, so it stays
# under SQLite's oldest limit (999) and takes a few milliseconds anywhere.
PURGE_BATCH = 500


def purge_sent(alias: str, *, before: float, limit: int = PURGE_BATCH) -> tuple[int, int]:
    """Delete at most ``limit`` rows of ``alias`` sent before ``before`` (epoch seconds).

    Returns:
        How many rows it found, and how many of those it deleted (another
        relay may have deleted the rest first). Found fewer than ``limit``:
        none is left.
    """
    rows = OutboxMessage.objects.using(alias)
    ids = list(rows.filter(state=SENT, sent_at__lt=before).values_list("id", flat=True)[:limit])
    if not ids:
        return 0, 0
    # The condition again: nothing moves a sent row today, but the statement stays right on its own.
    deleted, _ = rows.filter(id__in=ids, state=SENT, sent_at__lt=before).delete()
    return len(ids), int(deleted)


def purge_processed(alias: str, *, before: float, limit: int = PURGE_BATCH) -> tuple[int, int]:
    """Delete at most ``limit`` processed-intent records of ``alias`` older than ``before``.

    Returns:
        How many it found, and how many of those it deleted, as :func:`purge_sent`.
    """
    cutoff = as_datetime(before)
    records = ProcessedIntent.objects.using(alias)
    keys = list(records.filter(processed_at__lt=cutoff).values_list("intent_id", flat=True)[:limit])
    if not keys:
        return 0, 0
    # processed_at again: a redelivery may have recorded the id anew since the SELECT.
    deleted, _ = records.filter(intent_id__in=keys, processed_at__lt=cutoff).delete()
    return len(keys), int(deleted)


def as_datetime(seconds: float) -> datetime:
    """Epoch seconds as the ``DateTimeField`` value ``auto_now_add`` would have written then.

    With ``USE_TZ`` an aware UTC datetime; without it a naive one in local time,
    which is what ``django.utils.timezone.now()`` returns there (Django sets the
    process's time zone to ``TIME_ZONE``).
    """
    if settings.USE_TZ:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    return datetime.fromtimestamp(seconds)
