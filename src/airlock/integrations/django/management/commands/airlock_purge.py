"""``manage.py airlock_purge --older-than 7d``: delete rows sent long ago."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser  # type: ignore[import-untyped]  # no hints

from airlock.integrations.django.outbox._commands import add_databases, run_purge


class Command(BaseCommand):  # type: ignore[misc]
    help = "Delete outbox rows that were sent longer ago than --older-than (e.g. 90, 30m, 12h, 7d, 2w)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, help="Age of the sent rows to delete: 90, 30m, 12h, 7d, 2w.")
        add_databases(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run_purge(options, self.stdout.write)
