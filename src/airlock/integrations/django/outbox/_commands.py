"""What the three management commands do, so each command file is a thin shell."""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import CommandError, CommandParser  # type: ignore[import-untyped]  # no hints
from django.db import connections  # type: ignore[import-untyped]

from airlock.integrations.django.outbox._check import check_relay
from airlock.integrations.django.outbox._discovery import TaskDiscoveryError
from airlock.integrations.django.outbox._models import DEAD, HELD
from airlock.integrations.django.outbox._relay import Relay, purge, requeue

__all__ = ["add_databases", "duration_of", "parse_duration", "run_check", "run_purge", "run_relay", "run_requeue"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, *, flag: str = "--older-than") -> float:
    """``"90"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` as seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if found is None:
        raise CommandError(f"{flag} {text!r}: give a number with an optional unit s, m, h, d or w (e.g. 7d)")
    return float(found[1]) * _UNITS[found[2] or "s"]


def duration_of(flag: str) -> Callable[[str], float]:
    """An argparse ``type=`` reading ``flag``'s value with :func:`parse_duration`."""
    return lambda text: parse_duration(text, flag=flag)


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


@contextmanager
def _logs_to(stream: Any, verbosity: int) -> Iterator[None]:
    """The relay's log lines (start, progress, warnings) on ``stream``, if the project logs them nowhere.

    Django configures only its own loggers: without this, a relay started as
    the docs say would show warnings alone (Python's last-resort handler), and
    never its start or progress line. A project with handlers keeps its own.
    """
    logger = logging.getLogger("airlock.integrations.django.outbox")
    if stream is None or verbosity < 1 or logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _touch(relay: Relay) -> None:
    try:
        relay.touch_liveness_file()
    except OSError as error:
        raise CommandError(f"--liveness-file {relay.liveness_file}: cannot touch it ({error})") from error


def run_relay(options: dict[str, Any], write: Any, log_to: Any = None) -> int:
    relay = Relay(
        databases=_aliases(options) or None,
        batch_size=options.get("batch_size"),
        liveness_file=options.get("liveness_file"),
        progress_every=options.get("progress_every"),
    )
    try:
        from airlock.integrations.django.outbox._metrics import OutboxMetrics
    except ImportError:  # without OpenTelemetry: logs only
        pass
    else:  # on the global meter provider: a no-op until the project sets one up
        relay.metrics = OutboxMetrics(databases=relay.databases)
    with _refused_at_start():  # a module that does not import stops the relay here, named
        relay.discover()
    with _stops_on_sigterm(relay), _logs_to(log_to, options.get("verbosity", 1)):
        if not options.get("once"):
            _touch(relay)  # a bad path is a CommandError before serving, not a traceback
            relay.run()
            return 0
        done = relay.run_once()
        _touch(relay)
        purged = relay.apply_retention(budget=None)  # a cron job of --once keeps the tables small too
    write(f"airlock relay: {done.sent} sent, {done.failed} failed ({done.dead} dead), {done.held} held\n")
    if purged:
        write(f"airlock relay: {purged} row(s) older than RETENTION deleted\n")
    if done.unreachable is not None:
        raise CommandError(f"the broker is unreachable ({done.unreachable}); {done.released} row(s) stay ready")
    if done.unresolved:
        raise CommandError(
            _unresolved_text(done.unresolved, ", so their rows stay ready (no attempt spent) for a relay that can")
        )
    return done.sent


@contextmanager
def _refused_at_start() -> Iterator[None]:
    """A module the relay must import and cannot: a ``CommandError`` naming it, not a traceback."""
    try:
        yield
    except TaskDiscoveryError as error:
        raise CommandError(str(error)) from error


def _unresolved_text(unresolved: dict[tuple[str, str], str], why: str) -> str:
    names = "; ".join(f"{executor} {task!r}: {fix}" for (executor, task), fix in sorted(unresolved.items()))
    return f"this process cannot resolve {len(unresolved)} task name(s){why}: {names}"


def run_check(options: dict[str, Any], write: Any) -> int:
    """``airlock_relay --check``: list the names in undelivered rows and whether this process resolves each.

    Sends nothing. Raises ``CommandError`` (a non-zero exit) if any is not resolved.
    """
    with _refused_at_start():
        found = check_relay(_aliases(options) or None)
    write("\n".join(found.lines()) + "\n")
    missing = {(name.executor, name.task): name.fix for name in found.missing}
    if missing:
        raise CommandError(_unresolved_text(missing, " carried by undelivered rows"))
    return len(found.names)


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
