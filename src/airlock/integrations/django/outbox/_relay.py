"""The relay: publishes what the fast path left, with claims, leases, backoff and a dead letter.

``python manage.py airlock_relay`` is a thin shell over :class:`Relay`; tests
drive the class directly.

Claims. On PostgreSQL and MariaDB/MySQL a relay takes a batch with
``SELECT ... FOR UPDATE SKIP LOCKED`` and stamps it with its claim and a lease
(``available_at`` moves to the end of the lease) before committing, so any
number of relays share the table without taking the same row. On SQLite the
claim is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n)``, atomic under
SQLite's database lock; run one relay per SQLite file (the documented
single-relay mode), since SQLite serializes writers anyway. A relay that dies
mid-batch leaves its rows claimed until the lease runs out; then any relay
takes them again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import monotonic, time
from typing import Any

from django.db import connections, transaction  # type: ignore[import-untyped]  # Django ships no type hints

from airlock._signal import Signal
from airlock.integrations.django.outbox._carriers import carrier_named
from airlock.integrations.django.outbox._models import DEAD, HELD, PENDING, READY, SENT, STATES, OutboxMessage
from airlock.integrations.django.outbox._options import outbox_options
from airlock.integrations.django.outbox._publish import Message, publish
from airlock.integrations.django.outbox._store import TABLE, for_ids
from airlock.signals.outbox import (
    relay_batch,
    relay_paused,
    relay_started,
    relay_stopped,
    row_dead,
    row_failed,
    rows_held,
)

__all__ = ["Pass", "Relay", "outbox_stats", "purge", "requeue"]

_log = logging.getLogger("airlock.integrations.django.outbox")

_FIELDS = ("id", "intent_id", "task", "executor", "payload", "attempts")


@dataclass
class Pass:
    """What :meth:`Relay.run_once` (or one batch) did."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    held: int = 0
    unreachable: BaseException | None = None
    sent_ids: list[str] = field(default_factory=list)

    def add(self, other: Pass) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.dead += other.dead
        self.released += other.released
        self.held += other.held
        self.unreachable = other.unreachable or self.unreachable
        self.sent_ids += other.sent_ids


class Relay:
    """Publishes ``ready`` rows of the outbox table, on every database it serves.

    Every argument defaults to ``settings.AIRLOCK["OUTBOX"]`` (see
    docs/reliability.md).

    Args:
        databases: The aliases to serve (default: ``DATABASES`` of the options,
            else every alias in ``settings.DATABASES``).
        batch_size: Rows claimed at once.
        lease: Seconds a claim lasts.
        max_attempts: Real failures before a row is dead-lettered.
        backoff: Seconds before the first retry; doubled per attempt, with jitter.
        backoff_max: The longest retry delay, and the longest pause while the
            broker is unreachable.
        hold_after: Seconds a ``pending`` row may wait before it is ``held``.
        poll: Seconds :meth:`run` sleeps when there is nothing to do.
        clock: Returns the time in seconds (tests move it).
        metrics: An :class:`~airlock.integrations.django.outbox.OutboxMetrics`
            whose counters the relay adds to, or ``None``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        databases: Sequence[str] | None = None,
        batch_size: int | None = None,
        lease: float | None = None,
        max_attempts: int | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        hold_after: float | None = None,
        poll: float | None = None,
        clock: Callable[[], float] = time,
        metrics: Any = None,
    ) -> None:
        options = outbox_options()
        self.databases = list(databases or options["DATABASES"] or connections.settings)
        self.batch_size = batch_size or options["BATCH_SIZE"]
        self.lease = options["LEASE"] if lease is None else lease
        self.max_attempts = max_attempts or options["MAX_ATTEMPTS"]
        self.backoff: float = options["BACKOFF"] if backoff is None else backoff
        self.backoff_max: float = options["BACKOFF_MAX"] if backoff_max is None else backoff_max
        self.hold_after = options["HOLD_AFTER"] if hold_after is None else hold_after
        self.poll = options["POLL"] if poll is None else poll
        self.clock = clock
        self.metrics = metrics
        self.id = f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self._claims = itertools.count(1)
        self._stop = threading.Event()
        self._tasks: dict[tuple[str, str], Any] = {}
        self._pause = 0.0

    # -- running ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the relay to stop: it publishes no further row and releases the rest of its batch."""
        self._stop.set()

    @property
    def is_stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Serve until :meth:`stop`: drain, then poll; pause while the broker is unreachable."""
        _tell(
            self,
            relay_started,
            logging.INFO,
            "airlock relay %(relay)s serving %(databases)s",
            databases=list(self.databases),
        )
        while not self._stop.is_set():
            done = self.run_once()
            if done.unreachable is not None:
                self._pause = min(self.backoff_max, max(0.25, self._pause * 2))
                _tell(
                    self,
                    relay_paused,
                    logging.WARNING,
                    "airlock relay %(relay)s: the broker is unreachable (%(error)s); "
                    "pausing %(seconds).2fs without spending attempts",
                    error=done.unreachable,
                    seconds=self._pause,
                )
                self._stop.wait(self._pause)
                continue
            self._pause = 0.0
            if not (done.sent or done.failed):
                self._stop.wait(self.poll)
        _tell(self, relay_stopped, logging.INFO, "airlock relay %(relay)s stopped")

    def run_once(self) -> Pass:
        """Hold stale pending rows, then publish every due row on every database; return the totals.

        Stops early (with ``unreachable`` set) when the broker cannot be reached.
        """
        total = Pass()
        for alias in self.databases:
            total.held += self.hold_stale(alias)
            while not self._stop.is_set():
                done = self.step(alias)
                total.add(done)
                if done.unreachable is not None:
                    return total
                if not (done.sent or done.failed or done.released):
                    break
        return total

    def step(self, alias: str) -> Pass:
        """Claim one batch on ``alias``, publish it, and record what happened."""
        token = f"{self.id}:{next(self._claims)}"
        rows = self._claim(alias, token)
        if not rows:
            return Pass()
        started = monotonic()
        messages, broken = self._messages(rows)
        outcome = publish(messages, stop=self._stop)
        done = Pass(unreachable=outcome.unreachable)
        connection = connections[alias]
        now = self.clock()
        if outcome.sent:
            ids = [message.ref[0] for message, _ in outcome.sent]
            _update_ids(connection, ids, "state = %s, sent_at = %s, claimed_by = ''", [SENT, now])
            done.sent = len(ids)
            done.sent_ids = [message.intent_id for message, _ in outcome.sent]
        failures = [(message.ref, error) for message, error in outcome.failed] + broken
        for row, error in failures:
            done.dead += self._fail(connection, row, error, token, now)
        done.failed = len(failures)
        if self.metrics is not None:
            self.metrics.published.add(done.sent)
            self.metrics.failed.add(done.failed)
        if outcome.untried:
            ids = [message.ref[0] for message in outcome.untried]
            # Not an attempt: the broker was down (or the relay is stopping).
            _update_ids(
                connection,
                ids,
                "available_at = %s, claimed_by = ''",
                [now],
                extra="claimed_by = %s",
                extra_values=[token],
            )
            done.released = len(ids)
        if relay_batch.receivers:  # a line per batch would flood the stdlib log: the bridge's only
            relay_batch.emit(
                self,
                database=alias,
                sent=done.sent,
                failed=done.failed,
                dead=done.dead,
                released=done.released,
                seconds=monotonic() - started,
            )
        return done

    # -- one batch ---------------------------------------------------------------------

    def _claim(self, alias: str, token: str) -> list[tuple[Any, ...]]:
        connection = connections[alias]
        now = self.clock()
        until = now + self.lease
        if connection.features.has_select_for_update_skip_locked:
            with transaction.atomic(using=alias):
                rows = list(
                    OutboxMessage.objects.using(alias)
                    .select_for_update(skip_locked=True)
                    .filter(state=READY, available_at__lte=now)
                    .order_by("id")
                    .values_list(*_FIELDS)[: self.batch_size]
                )
                if rows:
                    _update_ids(
                        connection, [row[0] for row in rows], "available_at = %s, claimed_by = %s", [until, token]
                    )
            return rows
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET available_at = %s, claimed_by = %s WHERE id IN "
                f"(SELECT id FROM {TABLE} WHERE state = %s AND available_at <= %s ORDER BY id LIMIT %s)",
                [until, token, READY, now, self.batch_size],
            )
            cursor.execute(
                f"SELECT {', '.join(_FIELDS)} FROM {TABLE} WHERE claimed_by = %s AND state = %s ORDER BY id",
                [token, READY],
            )
            return [tuple(row) for row in cursor.fetchall()]

    def _messages(self, rows: list[tuple[Any, ...]]) -> tuple[list[Message], list[tuple[Any, BaseException]]]:
        messages: list[Message] = []
        broken: list[tuple[Any, BaseException]] = []
        for row in rows:
            _, intent_id, name, executor, payload, _ = row
            try:
                carrier = carrier_named(executor)
                key = (executor, name)
                task = self._tasks.get(key)
                if task is None:
                    task = self._tasks[key] = carrier.resolve(name)
                args, kwargs, options, *traced = json.loads(payload)
            except Exception as error:
                broken.append((row, error))
                continue
            trace = traced[0] if traced and isinstance(traced[0], dict) else None
            messages.append(Message(intent_id, carrier, task, args, kwargs, options, ref=row, name=name, trace=trace))
        return messages, broken

    def _fail(self, connection: Any, row: tuple[Any, ...], error: BaseException, token: str, now: float) -> int:
        attempts = row[5] + 1
        text = _describe(error)[:2000]
        row_fields = {
            "database": connection.alias,
            "intent_id": row[1],
            "task": row[2],
            "attempts": attempts,
            "error": text,
        }
        if attempts >= self.max_attempts:
            _tell(
                self,
                row_dead,
                logging.ERROR,
                "airlock relay: %(task)s %(intent_id)s dead after %(attempts)d attempts: %(error)s",
                **row_fields,
            )
            _update_ids(
                connection,
                [row[0]],
                "state = %s, attempts = %s, last_error = %s, claimed_by = ''",
                [DEAD, attempts, text],
            )
            return 1
        delay = self.retry_delay(attempts)
        _tell(
            self,
            row_failed,
            logging.WARNING,
            "airlock relay: %(task)s %(intent_id)s failed (attempt %(attempts)d), retry in %(retry_in).1fs: %(error)s",
            retry_in=delay,
            **row_fields,
        )
        _update_ids(
            connection,
            [row[0]],
            "attempts = %s, available_at = %s, last_error = %s, claimed_by = ''",
            [attempts, now + delay, text],
        )
        return 0

    def retry_delay(self, attempts: int) -> float:
        """Seconds before retry ``attempts + 1``: doubling from ``backoff``, capped, with equal jitter."""
        delay = min(self.backoff_max, self.backoff * 2 ** (attempts - 1))
        return float(delay / 2 + random.uniform(0, delay / 2))

    def hold_stale(self, alias: str) -> int:
        """Turn rows ``pending`` for longer than ``hold_after`` into ``held`` ones; return how many."""
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET state = %s WHERE state = %s AND created_at < %s",
                [HELD, PENDING, self.clock() - self.hold_after],
            )
            held = int(max(cursor.rowcount, 0))
        if held:
            _tell(
                self,
                rows_held,
                logging.WARNING,
                "airlock relay: %(count)d row(s) on %(database)r were committed but their scope never decided (its "
                "process died?); they are held: inspect them, then `manage.py airlock_requeue --held` or purge them",
                database=alias,
                count=held,
            )
        return held


def _tell(relay: Relay, signal: Signal, level: int, text: str, **fields: Any) -> None:
    """Say what the relay did: on its signal, and in the stdlib log unless the structlog bridge logs it.

    ``text`` names its values (``%(task)s``): the signal's keyword arguments, and
    ``relay`` for the relay's id; a list reads as its items joined by commas.
    """
    if signal.receivers:
        signal.emit(relay, **fields)
    bridge = sys.modules.get("airlock.integrations.structlog")
    if bridge is None or not bridge.is_instrumented():
        shown = {key: ", ".join(value) if isinstance(value, list) else value for key, value in fields.items()}
        _log.log(level, text, {"relay": relay.id, **shown})


def _describe(error: BaseException) -> str:
    """``Type: message``, and what it was raised from when it says nothing itself.

    kombu wraps py-amqp's errors in an ``OperationalError`` whose text may be
    empty (a publisher-confirm nack): ``last_error`` should still say why.
    """
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__ or error.__context__
    if cause is not None and not str(error):
        text += f" (from {type(cause).__name__}: {cause})"
    return text


def _update_ids(
    connection: Any,
    ids: Sequence[Any],
    assignments: str,
    values: list[Any],
    *,
    extra: str = "",
    extra_values: Sequence[Any] = (),
) -> None:
    tail = f" AND {extra}" if extra else ""
    for_ids(
        connection, f"UPDATE {TABLE} SET {assignments}", values, ids, column="id", tail=tail, tail_values=extra_values
    )


def requeue(
    using: str = "default", *, states: Iterable[str] = (DEAD, HELD), intent_ids: Sequence[str] | None = None
) -> int:
    """Make dead (or held) rows ready again, with their attempts reset; return how many.

    .. versionadded:: 0.1
    """
    states = list(states)
    wrong = [state for state in states if state not in (DEAD, HELD)]
    if wrong:
        raise ValueError(f"requeue() brings back dead or held rows, not {', '.join(map(repr, wrong))}")
    rows = OutboxMessage.objects.using(using).filter(state__in=states)
    if intent_ids is not None:
        rows = rows.filter(intent_id__in=list(intent_ids))
    return int(rows.update(state=READY, attempts=0, available_at=time(), claimed_by="", last_error=""))


def purge(using: str = "default", *, older_than: float) -> int:
    """Delete the rows sent more than ``older_than`` seconds ago; return how many.

    .. versionadded:: 0.1
    """
    rows = OutboxMessage.objects.using(using).filter(state=SENT, sent_at__lt=time() - older_than)
    deleted, _ = rows.delete()
    return int(deleted)


def outbox_stats(using: str = "default", *, now: float | None = None) -> dict[str, float]:
    """Counts per state, and the age in seconds of the oldest row still to deliver.

    .. versionadded:: 0.1
    """
    now = time() if now is None else now
    rows = OutboxMessage.objects.using(using)
    counts = dict.fromkeys(STATES, 0.0)
    for state, count in rows.values_list("state").order_by().annotate(n=_count()).values_list("state", "n"):
        counts[state] = float(count)
    oldest = rows.filter(state__in=[READY, PENDING]).order_by("created_at").values_list("created_at", flat=True).first()
    counts["oldest_pending_age"] = 0.0 if oldest is None else max(0.0, now - oldest)
    return counts


def _count() -> Any:
    from django.db.models import Count  # type: ignore[import-untyped]

    return Count("id")
