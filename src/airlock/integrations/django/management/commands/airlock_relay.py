"""``manage.py airlock_relay [--once | --check]``: publish what the outbox's fast path left."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser  # type: ignore[import-untyped]  # no hints

from airlock.integrations.django.outbox._commands import add_databases, duration_of, run_check, run_relay


class Command(BaseCommand):  # type: ignore[misc]
    help = "Publish the ready rows of the airlock outbox; runs until SIGTERM, or drains once with --once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain what is due, then exit.")
        parser.add_argument(
            "--check",
            action="store_true",
            help="Send nothing: list the task names in undelivered rows and whether this process resolves each; "
            "exit non-zero if one is not (for deploy pipelines and readiness probes).",
        )
        parser.add_argument("--batch-size", type=int, help="Rows claimed at once (default OUTBOX['BATCH_SIZE']).")
        parser.add_argument(
            "--liveness-file",
            metavar="PATH",
            help="A file touched on every loop (also while the broker is down), for a liveness probe.",
        )
        parser.add_argument(
            "--progress-every",
            type=duration_of("--progress-every"),
            metavar="SECONDS",
            help="Seconds between progress lines: 60, 5m, 0 for none (default OUTBOX['PROGRESS_EVERY']).",
        )
        add_databases(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("check"):
            run_check(options, self.stdout.write)
            return
        run_relay(options, self.stdout.write, log_to=self.stderr)
