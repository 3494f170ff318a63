"""What the three management commands do, so each command file is a thin shell."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import CommandError, CommandParser  # type: ignore[import-untyped]  # no hints
from django.db import connections  # type: ignore[import-untyped]

from airlock.integrations.django.outbox._models import DEAD, HELD
from airlock.integrations.django.outbox._relay import Relay, purge, requeue

__all__ = ["add_databases", "parse_duration", "run_purge", "run_relay", "run_requeue"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"90"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` as seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if found is None:
        raise CommandError(f"--older-than {text!r}: give a number with an optional unit s, m, h, d or w (e.g. 7d)")
    return float(found[1]) * _UNITS[found[2] or "s"]


def add_databases(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        action="append",
        dest="databases",
        metavar="ALIAS",
        help="A database alias to serve (repeatable). Default: OUTBOX['DATABASES'], else every alias.",
    )


def _aliases(options: dict[str, Any]) -> list[str]:
    aliases = options.get("databases") or []
    unknown = [alias for alias in aliases if alias not in connections.settings]
    if unknown:
        raise CommandError(
            f"--database {', '.join(unknown)}: no such alias; settings.DATABASES has {', '.join(connections.settings)}"
        )
    return list(aliases)


@contextmanager
def _stops_on_sigterm(relay: Relay) -> Iterator[None]:
    """SIGTERM (and SIGINT) ask the relay to stop: it releases the rest of its batch, then returns."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    for number in previous:
        signal.signal(number, lambda *_: relay.stop())
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_relay(options: dict[str, Any], write: Any) -> int:
    relay = Relay(databases=_aliases(options) or None, batch_size=options.get("batch_size"))
    try:
        from airlock.integrations.django.outbox._metrics import OutboxMetrics
    except ImportError:  # without OpenTelemetry: logs only
        pass
    else:  # on the global meter provider: a no-op until the project sets one up
        relay.metrics = OutboxMetrics(databases=relay.databases)
    with _stops_on_sigterm(relay):
        if not options.get("once"):
            relay.run()
            return 0
        done = relay.run_once()
    write(f"airlock relay: {done.sent} sent, {done.failed} failed ({done.dead} dead), {done.held} held\n")
    if done.unreachable is not None:
        raise CommandError(f"the broker is unreachable ({done.unreachable}); {done.released} row(s) stay ready")
    return done.sent


def run_requeue(options: dict[str, Any], write: Any) -> int:
    states = [state for state, flag in ((DEAD, options.get("dead")), (HELD, options.get("held"))) if flag]
    if not states and not options.get("ids"):
        raise CommandError("say what to requeue: --dead, --held, or --id INTENT_ID (with --dead/--held to narrow)")
    total = 0
    for alias in _aliases(options) or list(connections.settings):
        total += requeue(alias, states=states or (DEAD, HELD), intent_ids=options.get("ids") or None)
    write(f"airlock: {total} row(s) ready again\n")
    return total


def run_purge(options: dict[str, Any], write: Any) -> int:
    older_than = parse_duration(options["older_than"])
    total = sum(purge(alias, older_than=older_than) for alias in _aliases(options) or list(connections.settings))
    write(f"airlock: {total} sent row(s) deleted\n")
    return total
