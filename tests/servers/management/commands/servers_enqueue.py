"""``python -m django servers_enqueue TOKEN --count N``: N rows, each with five tasks, from a command."""

from __future__ import annotations

from typing import Any

from airlock.integrations.django import AirlockCommand
from tests.servers.tasks import TASKS_PER_REQUEST
from tests.servers.views import _commit


class Command(AirlockCommand):
    help = "Commit COUNT rows, each with five tasks, in the command's airlock scope."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("token")
        parser.add_argument("--count", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> str:
        for _ in range(options["count"]):
            _commit(options["token"], TASKS_PER_REQUEST)
        return f"{options['count']} row(s) committed"
