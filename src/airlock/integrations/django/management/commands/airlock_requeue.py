"""``manage.py airlock_requeue --dead|--held [--id ...]``: make rows ready again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser  # type: ignore[import-untyped]  # no hints

from airlock.integrations.django.outbox._commands import add_databases, run_requeue


class Command(BaseCommand):  # type: ignore[misc]
    help = "Make dead-lettered or held outbox rows ready again, with their attempts reset."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dead", action="store_true", help="Rows that failed OUTBOX['MAX_ATTEMPTS'] times.")
        parser.add_argument("--held", action="store_true", help="Rows whose process died before its scope decided.")
        parser.add_argument(
            "--id", action="append", dest="ids", metavar="INTENT_ID", help="Only this intent (repeatable)."
        )
        add_databases(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run_requeue(options, self.stdout.write)
