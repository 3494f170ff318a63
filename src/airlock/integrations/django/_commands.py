"""Management commands and scripts in a scope, with a dry run that lists what would go."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from django.core.management.base import BaseCommand, CommandParser  # type: ignore[import-untyped]  # Django ships no type hints

import airlock
from airlock import DropAll, Scope

__all__ = ["AirlockCommand", "command_scope"]


class _Writer(Protocol):
    def write(self, text: str, /) -> Any: ...


@contextmanager
def command_scope(*, dry_run: bool = False, stdout: _Writer | None = None, **kwargs: Any) -> Iterator[Scope]:
    """A scope for a script or a command: flush on success, discard on an exception.

    With ``dry_run=True`` the scope's policy is :class:`~airlock.DropAll`: every
    intent is dropped (and reported on ``intent_dropped``) and the intents that
    would have been sent are listed on ``stdout``, one per line, as calls.

    Args:
        dry_run: Drop everything and list it instead of sending it.
        stdout: Where the dry run writes its list (default ``sys.stdout``).
        **kwargs: Passed to :func:`airlock.scope` (``policy``, ``executor``, ``using``...).

    Example::

        with command_scope(dry_run="--dry-run" in sys.argv):
            for order in Order.objects.filter(state="late"):
                airlock.enqueue(send_reminder, order.pk)

    .. versionadded:: 0.1
    """
    if dry_run:
        kwargs["policy"] = DropAll()
    scope = airlock.scope(**kwargs).enter()
    try:
        yield scope
    except BaseException as error:
        scope.exit()
        scope.discard(error)
        raise
    scope.exit()
    would_go = scope.intents if dry_run else []
    scope.flush()
    if dry_run:
        out = stdout or sys.stdout
        out.write(f"airlock dry run: {len(would_go)} intent(s) would have been sent\n")
        for intent in would_go:
            out.write(f"  {intent}\n")


class AirlockCommand(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    """A management command whose ``handle()`` runs inside a scope, with ``--dry-run``.

    Subclass it instead of ``BaseCommand``; ``add_arguments`` and ``handle`` stay
    yours. ``--dry-run`` (``call_command(..., dry_run=True)``) drops every
    intent and prints what would have been sent; ``handle`` sees it as
    ``options["airlock_dry_run"]``. Set :attr:`airlock_dry_run_flag` to another
    name if the command already has a ``--dry-run`` of its own.

    .. versionadded:: 0.1
    """

    airlock_dry_run_flag = "--dry-run"

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument(
            self.airlock_dry_run_flag,
            dest="airlock_dry_run",
            action="store_true",
            help="Send no task: drop every airlock intent and list what would have been sent.",
        )
        return parser

    def execute(self, *args: Any, **options: Any) -> Any:
        with command_scope(dry_run=bool(options.get("airlock_dry_run")), stdout=_CommandOutput(self)):
            return super().execute(*args, **options)


class _CommandOutput:
    """Writes to the command's ``stdout`` as ``execute()`` sets it (``call_command(stdout=...)``)."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command

    def write(self, text: str) -> None:
        self.command.stdout.write(text, ending="")
