"""``manage.py airlock_relay [--once]``: publish what the outbox's fast path left."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser  # type: ignore[import-untyped]  # no hints

from airlock.integrations.django.outbox._commands import add_databases, run_relay


class Command(BaseCommand):  # type: ignore[misc]
    help = "Publish the ready rows of the airlock outbox; runs until SIGTERM, or drains once with --once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain what is due, then exit.")
        parser.add_argument("--batch-size", type=int, help="Rows claimed at once (default OUTBOX['BATCH_SIZE']).")
        add_databases(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run_relay(options, self.stdout.write)
