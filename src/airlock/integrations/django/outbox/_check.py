"""``airlock_relay --check``: does this process resolve every task name the outbox still has to deliver?

For deploy pipelines and readiness probes: it discovers tasks as the relay
would, reads which ``(executor, task)`` names the undelivered rows carry
(``pending``, ``ready``, ``held`` and ``dead``), and resolves each one, sending
nothing. A name it cannot resolve comes with the line to add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Count  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox._carriers import UNRESOLVED, carrier_named
from airlock.integrations.django.outbox._discovery import Discovery, discover_tasks
from airlock.integrations.django.outbox._models import DEAD, HELD, PENDING, READY, OutboxMessage
from airlock.integrations.django.outbox._relay import served_databases

__all__ = ["RelayCheck", "TaskName", "check_relay"]

UNDELIVERED = (PENDING, READY, HELD, DEAD)


@dataclass(frozen=True)
class TaskName:
    """One ``(executor, task)`` name in the undelivered rows of one database.

    Attributes:
        database: The alias.
        executor: The carrier key the rows name (``celery``, ``huey``, ...).
        task: The registered name.
        rows: How many rows, per state.
        error: Why this process cannot resolve it (``""``: it can).
        fix: The line to add, when it cannot.

    .. versionadded:: 0.1
    """

    database: str
    executor: str
    task: str
    rows: dict[str, int] = field(default_factory=dict)
    error: str = ""
    fix: str = ""

    @property
    def is_resolved(self) -> bool:
        return not self.error

    def line(self) -> str:
        counts = ", ".join(f"{count} {state}" for state, count in self.rows.items())
        verdict = "resolves" if self.is_resolved else f"UNRESOLVED: {self.error}; fix: {self.fix}"
        return f"{self.database}: {self.executor} {self.task} ({counts}): {verdict}"


@dataclass(frozen=True)
class RelayCheck:
    """What :func:`check_relay` found: what it discovered, and every name with its verdict.

    .. versionadded:: 0.1
    """

    discovery: Discovery
    names: tuple[TaskName, ...]

    @property
    def missing(self) -> list[TaskName]:
        """The names this process cannot resolve."""
        return [name for name in self.names if not name.is_resolved]

    def lines(self) -> list[str]:
        """The report ``airlock_relay --check`` prints."""
        found = [f"  {line}" for line in self.discovery.lines()] or ["  nothing (no queue's discovery applies)"]
        lines = ["airlock relay check: task modules imported as the workers would:", *found]
        lines += [name.line() for name in self.names]
        lines.append(
            f"airlock relay check: {len(self.names)} task name(s) in undelivered rows, "
            f"{len(self.missing)} this process cannot resolve"
        )
        return lines


def check_relay(databases: Sequence[str] | None = None) -> RelayCheck:
    """Discover tasks as the relay does, then resolve every name in the undelivered rows; send nothing.

    Args:
        databases: The aliases to look at (default: those the relay serves).

    Raises:
        TaskDiscoveryError: A module the relay must import does not import.

    .. versionadded:: 0.1
    """
    discovery = discover_tasks()
    names: list[TaskName] = []
    for alias in served_databases(databases):
        counts: dict[tuple[str, str], dict[str, int]] = {}
        found = (
            OutboxMessage.objects.using(alias)
            .filter(state__in=UNDELIVERED)
            .values_list("executor", "task", "state")
            .order_by()
            .annotate(n=Count("id"))
        )
        for executor, task, state, count in found:
            counts.setdefault((executor, task), {})[state] = count
        for (executor, task), rows in sorted(counts.items()):
            ordered = {state: rows[state] for state in UNDELIVERED if state in rows}
            names.append(TaskName(alias, executor, task, ordered, *_verdict(executor, task)))
    return RelayCheck(discovery, tuple(names))


def _verdict(executor: str, task: str) -> tuple[str, str]:
    """``("", "")`` if this process resolves the name, else ``(why not, the line to add)``."""
    try:
        carrier_named(executor).resolve(task)
    except UNRESOLVED as error:
        return str(getattr(error, "problem", "") or error), str(getattr(error, "fix", "") or error)
    return "", ""
