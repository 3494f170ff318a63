"""The outbox's two tables: the rows waiting to go, and the intents consumers have run."""

from __future__ import annotations

from django.db import models  # type: ignore[import-untyped]  # Django ships no type hints

__all__ = ["DEAD", "HELD", "PENDING", "READY", "SENT", "STATES", "OutboxMessage", "ProcessedIntent"]

PENDING = "pending"  # written inside its transaction; the scope has not decided yet
READY = "ready"  # the scope flushed it: it must be delivered
SENT = "sent"  # handed to the broker
DEAD = "dead"  # failed MAX_ATTEMPTS times; waits for ``airlock_requeue``
HELD = "held"  # undecided too long, or its writer died with UNDECIDED = "hold"; waits for a person

STATES = (PENDING, READY, SENT, DEAD, HELD)


class OutboxMessage(models.Model):  # type: ignore[misc]  # Django ships no type hints
    """One intent, written in the transaction it was enqueued in.

    Times are seconds since the epoch (``time.time()``): the write at enqueue is
    raw SQL, and a float needs no per-backend date adapter.

    .. versionadded:: 0.1
    """

    intent_id = models.CharField(max_length=36, unique=True, help_text="Carried to the consumer (Celery task_id).")
    task = models.CharField(max_length=255, help_text="The task's name in its queue library's registry.")
    executor = models.CharField(max_length=32, help_text="Which carrier publishes it: celery, dramatiq, ...")
    payload = models.TextField(help_text="JSON: [args, kwargs, dispatch options].")
    state = models.CharField(max_length=8, choices=[(s, s) for s in STATES], default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.FloatField()
    available_at = models.FloatField(help_text="Not claimed before this time (backoff, or a relay's lease).")
    sent_at = models.FloatField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    written_by = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="The writer process that wrote it; the relay checks whether it is alive.",
    )
    last_error = models.TextField(blank=True, default="")

    class Meta:
        app_label = "airlock"
        db_table = "airlock_outbox"
        verbose_name = "outbox message"
        indexes = (models.Index(fields=["state", "available_at"], name="airlock_outbox_due"),)

    def __str__(self) -> str:
        return f"{self.task} [{self.state}] {self.intent_id}"


class ProcessedIntent(models.Model):  # type: ignore[misc]
    """An intent id a consumer has run, so a second delivery of it is dropped.

    .. versionadded:: 0.1
    """

    intent_id = models.CharField(max_length=36, primary_key=True)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "airlock"
        db_table = "airlock_processed_intent"
        verbose_name = "processed intent"

    def __str__(self) -> str:
        return str(self.intent_id)
