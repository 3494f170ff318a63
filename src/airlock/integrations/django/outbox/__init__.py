"""The durable outbox: what a transaction committed is delivered, even if the broker is down or the process dies.

Turn it on with ``AIRLOCK = {"OUTBOX": True}`` (or a dict of options) and
``python manage.py migrate``; run ``python manage.py airlock_relay`` next to the
workers. See docs/reliability.md for the guarantees, and what they rely on.

.. versionadded:: 0.1
"""

from __future__ import annotations

from airlock.integrations.django.outbox._background import Publisher, background_publisher
from airlock.integrations.django.outbox._carriers import Carrier, TaskNotFound, register_carrier
from airlock.integrations.django.outbox._check import RelayCheck, TaskName, check_relay
from airlock.integrations.django.outbox._dedupe import deduplicate, first_delivery
from airlock.integrations.django.outbox._discovery import Discovery, TaskDiscoveryError, discover_tasks
from airlock.integrations.django.outbox._drain import OutboxStuck, drain_outbox
from airlock.integrations.django.outbox._models import DEAD, HELD, PENDING, READY, SENT, OutboxMessage, ProcessedIntent
from airlock.integrations.django.outbox._options import configure_outbox, outbox_options
from airlock.integrations.django.outbox._relay import Pass, Relay, outbox_stats, purge, requeue
from airlock.integrations.django.outbox._scope import OutboxScope
from airlock.signals.outbox import handoff_full

__all__ = [
    "DEAD",
    "HELD",
    "PENDING",
    "READY",
    "SENT",
    "Carrier",
    "Discovery",
    "OutboxMessage",
    "OutboxScope",
    "OutboxStuck",
    "Pass",
    "ProcessedIntent",
    "Publisher",
    "Relay",
    "RelayCheck",
    "TaskDiscoveryError",
    "TaskName",
    "TaskNotFound",
    "background_publisher",
    "check_relay",
    "configure_outbox",
    "deduplicate",
    "discover_tasks",
    "drain_outbox",
    "first_delivery",
    "handoff_full",
    "outbox_options",
    "outbox_stats",
    "purge",
    "register_carrier",
    "requeue",
]
