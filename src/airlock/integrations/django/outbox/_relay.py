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

Task names. Before its first claim a relay imports the task modules as each
queue's worker would (:func:`~._discovery.discover_tasks`). A row whose name
this process still cannot resolve is its configuration's error, not the
row's: the row is given back at once with no attempt spent (another relay may
resolve it), the name is reported once with the line to add, and this relay's
later claims skip it.
"""

from __future__ import annotations

import enum
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
from pathlib import Path
from time import monotonic, time
from typing import Any, Literal

from django.db import DatabaseError, connections, transaction  # type: ignore[import-untyped]  # Django ships no type hints

from airlock._signal import Signal
from airlock.integrations.django.outbox._carriers import UNRESOLVED, carrier_named
from airlock.integrations.django.outbox._discovery import Discovery, discover_tasks
from airlock.integrations.django.outbox._models import DEAD, HELD, PENDING, READY, SENT, STATES, OutboxMessage
from airlock.integrations.django.outbox._options import UNDECIDED, outbox_options
from airlock.integrations.django.outbox._publish import Message, publish
from airlock.integrations.django.outbox._retention import PURGE_BATCH, purge_processed, purge_sent
from airlock.integrations.django.outbox._store import TABLE, for_ids
from airlock.integrations.django.outbox._writers import dead_writers
from airlock.signals.outbox import (
    relay_batch,
    relay_paused,
    relay_progress,
    relay_started,
    relay_stopped,
    row_dead,
    row_failed,
    rows_held,
    rows_recovered,
    task_unresolved,
)

__all__ = ["Pass", "Relay", "outbox_stats", "purge", "requeue"]

_log = logging.getLogger("airlock.integrations.django.outbox")

_FIELDS = ("id", "intent_id", "task", "executor", "payload", "attempts")
# Seconds a pending row is left alone before its writer's liveness is asked: a live
# writer is then almost always past its ready mark (milliseconds after its commit).
UNDECIDED_GRACE = 1.0


class _Option(enum.Enum):
    """A keyword's default when ``None`` means something else: read the option from settings."""

    SETTING = "from settings.AIRLOCK['OUTBOX']"


@dataclass
class Pass:
    """What :meth:`Relay.run_once` (or one batch) did."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    held: int = 0
    recovered: int = 0  # rows of writers that died before their scope decided
    unreachable: BaseException | None = None
    sent_ids: list[str] = field(default_factory=list)
    # (executor, task) -> the fix, for each name this relay met and could not resolve
    unresolved: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, other: Pass) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.dead += other.dead
        self.released += other.released
        self.held += other.held
        self.recovered += other.recovered
        self.unreachable = other.unreachable or self.unreachable
        self.sent_ids += other.sent_ids
        self.unresolved.update(other.unresolved)


_BEAT_EVERY = 5.0  # seconds: the longest a pause goes without touching the liveness file
_RETENTION_EVERY = 60.0  # seconds between two rounds of retention


@dataclass
class _Progress:
    """What :meth:`Relay.run` did since ``started`` (the relay's clock): the next progress line."""

    started: float
    sent: int = 0
    failed: int = 0
    dead: int = 0
    held: int = 0
    recovered: int = 0
    purged: int = 0
    unresolved: set[tuple[str, str]] = field(default_factory=set)

    def count(self, done: Pass) -> None:
        self.sent += done.sent
        self.failed += done.failed
        self.dead += done.dead
        self.held += done.held
        self.recovered += done.recovered
        self.unresolved.update(done.unresolved)  # the names, without their fixes

    @property
    def has_news(self) -> bool:
        return bool(self.sent or self.failed or self.dead or self.held or self.recovered or self.purged)


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
        undecided: What becomes of the ``pending`` rows of a writer process
            that died before its scope decided: ``"deliver"`` or ``"hold"``.
        poll: Seconds :meth:`run` sleeps when there is nothing to do.
        clock: Returns the time in seconds (tests move it).
        metrics: An :class:`~airlock.integrations.django.outbox.OutboxMetrics`
            whose counters the relay adds to, or ``None``.
        liveness_file: A file :meth:`run` touches on every loop, also while
            the broker is unreachable, for a liveness probe (``None``: none).
        progress_every: Seconds between the progress lines of :meth:`run`
            (``0``: none).
        retention: Seconds the relay keeps sent rows and processed-intent
            records; :meth:`run` deletes older ones in small batches
            (``None``: it deletes nothing).
        purge_batch: Rows deleted per statement by :meth:`apply_retention`.

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
        undecided: str | None = None,
        poll: float | None = None,
        clock: Callable[[], float] = time,
        metrics: Any = None,
        liveness_file: str | os.PathLike[str] | None = None,
        progress_every: float | None = None,
        retention: float | Literal[_Option.SETTING] | None = _Option.SETTING,
        purge_batch: int = PURGE_BATCH,
    ) -> None:
        options = outbox_options()
        self.databases = served_databases(databases)
        self.batch_size = batch_size or options["BATCH_SIZE"]
        self.lease = options["LEASE"] if lease is None else lease
        self.max_attempts = max_attempts or options["MAX_ATTEMPTS"]
        self.backoff: float = options["BACKOFF"] if backoff is None else backoff
        self.backoff_max: float = options["BACKOFF_MAX"] if backoff_max is None else backoff_max
        self.hold_after = options["HOLD_AFTER"] if hold_after is None else hold_after
        self.undecided: str = undecided or options["UNDECIDED"]
        if self.undecided not in UNDECIDED:
            raise ValueError(f"Relay(undecided=...) is 'deliver' or 'hold', not {self.undecided!r}")
        self.poll = options["POLL"] if poll is None else poll
        self.clock = clock
        self.metrics = metrics
        self.id = f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self._claims = itertools.count(1)
        self._stop = threading.Event()
        self._tasks: dict[tuple[str, str], Any] = {}
        # (executor, task) -> fix: names this process cannot resolve; its claims skip their rows.
        self._unresolved: dict[tuple[str, str], str] = {}
        self._discovery: Discovery | None = None
        self._pause = 0.0
        self.liveness_file = None if liveness_file is None else Path(liveness_file)
        self.progress_every: float = options["PROGRESS_EVERY"] if progress_every is None else progress_every
        self.retention: float | None = options["RETENTION"] if retention is _Option.SETTING else retention
        self.purge_batch = purge_batch
        self._is_touch_failing = False
        self._is_purge_cut_short = False
        self._progress = _Progress(0.0)
        self._retention_due = 0.0  # the clock's time of the next apply_retention() in run()

    # -- running ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the relay to stop: it publishes no further row and releases the rest of its batch."""
        self._stop.set()

    @property
    def is_stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Serve until :meth:`stop`: drain, then poll; pause while the broker is unreachable.

        Every loop, also while paused, touches ``liveness_file``; about once a
        minute it applies ``retention``; every ``progress_every`` seconds it
        says what it did (``relay_progress``).

        Raises:
            OSError: ``liveness_file`` cannot be written at the start.
        """
        self._announce()
        self.touch_liveness_file()  # a path that cannot be written fails here, not in the probe
        self._progress = _Progress(self.clock())
        self._retention_due = self.clock()
        while not self._stop.is_set():
            self._beat()
            done = self.run_once()
            self._progress.count(done)
            self._retain_when_due()
            self._report_when_due()
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
                self._rest(self._pause)
                continue
            self._pause = 0.0
            if not (done.sent or done.failed):
                self._rest(self.poll)
        if self._progress.has_news:  # the last, partial interval
            self._report()
        _tell(self, relay_stopped, logging.INFO, "airlock relay %(relay)s stopped")

    def touch_liveness_file(self) -> None:
        """Create ``liveness_file``, or set its modification time to now; nothing without one.

        Raises:
            OSError: The file cannot be created or touched.
        """
        if self.liveness_file is not None:
            self.liveness_file.touch()

    def apply_retention(self, *, budget: float | None = 1.0) -> int:
        """Delete sent rows and processed-intent records older than ``retention``; return how many.

        At most ``purge_batch`` rows per statement, each in its own
        transaction, so no lock is held for long; after ``budget`` seconds
        (``None``: when all are gone) it stops, and the next call goes on.
        Several relays may do it at once. A database error is logged, and the
        next call tries again.
        """
        self._is_purge_cut_short = False
        if self.retention is None:
            return 0
        before = self.clock() - self.retention
        deadline = float("inf") if budget is None else monotonic() + budget
        total = 0
        for alias in self.databases:
            for table, purge_some in (("airlock_outbox", purge_sent), ("airlock_processed_intent", purge_processed)):
                while not self._stop.is_set():
                    try:
                        found, deleted = purge_some(alias, before=before, limit=self.purge_batch)
                    except DatabaseError as error:
                        _log.warning(
                            "airlock relay %s: deleting old rows of %s on %r failed (%s); it tries again later",
                            self.id,
                            table,
                            alias,
                            _describe(error),
                        )
                        break
                    total += deleted
                    if deleted and self.metrics is not None:
                        self.metrics.purged.add(deleted, {"airlock.database": alias, "airlock.table": table})
                    if found < self.purge_batch:
                        break
                    if monotonic() >= deadline:
                        self._is_purge_cut_short = True
                        return total
        return total

    def _announce(self) -> None:
        every = (
            f"a progress line every {_duration(self.progress_every)}" if self.progress_every else "no progress lines"
        )
        kept = (
            "keeping sent rows and processed intent ids"
            if self.retention is None
            else f"deleting sent rows and processed intent ids after {_duration(self.retention)}"
        )
        _tell(
            self,
            relay_started,
            logging.INFO,
            f"airlock relay %(relay)s serving %(databases)s: batches of %(batch_size)d, polling every %(poll)ss; "
            f"{every}; {kept}",
            databases=list(self.databases),
            batch_size=self.batch_size,
            poll=self.poll,
            retention=self.retention,
        )

    def _beat(self) -> None:
        """Touch the liveness file; a failure is logged once, and the probe tells the rest."""
        try:
            self.touch_liveness_file()
        except OSError as error:
            if not self._is_touch_failing:
                _log.error(
                    "airlock relay %s: cannot touch its liveness file %s: %s", self.id, self.liveness_file, error
                )
            self._is_touch_failing = True
        else:
            self._is_touch_failing = False

    def _rest(self, seconds: float) -> None:
        """Wait ``seconds`` or until :meth:`stop`; a long pause still touches the file and reports."""
        end = monotonic() + seconds
        while not self._stop.is_set():
            left = end - monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, _BEAT_EVERY))
            if left > _BEAT_EVERY:
                self._beat()
                self._report_when_due()

    def _retain_when_due(self) -> None:
        if self.retention is None or self.clock() < self._retention_due:
            return
        self._progress.purged += self.apply_retention()
        # Cut short by its budget: go on next loop; else look again in a minute.
        self._retention_due = self.clock() + (0.0 if self._is_purge_cut_short else _RETENTION_EVERY)

    def _report_when_due(self) -> None:
        if self.progress_every and self.clock() - self._progress.started >= self.progress_every:
            self._report()

    def _report(self) -> None:
        now = self.clock()
        progress, self._progress = self._progress, _Progress(now)
        if not self.progress_every:
            return
        _tell(
            self,
            relay_progress,
            logging.INFO,
            "airlock relay %(relay)s, last %(seconds).0fs: %(sent)d sent, %(failed)d failed (%(dead)d dead), "
            "%(held)d held, %(recovered)d recovered, %(unresolved)d task name(s) unresolved, %(purged)d purged",
            sent=progress.sent,
            failed=progress.failed,
            dead=progress.dead,
            held=progress.held,
            recovered=progress.recovered,
            unresolved=len(progress.unresolved),
            purged=progress.purged,
            seconds=max(0.0, now - progress.started),
        )

    def run_once(self) -> Pass:
        """Recover dead writers' rows, hold stale ones, then publish every due row on every database.

        Returns the totals.

        Stops early (with ``unreachable`` set) when the broker cannot be reached.
        """
        self.discover()
        total = Pass()
        for alias in self.databases:
            total.recovered += self.recover_undecided(alias)
            total.held += self.hold_stale(alias)
            while not self._stop.is_set():
                done = self.step(alias)
                total.add(done)
                self._beat()  # a long drain after an outage is still a live relay
                if done.unreachable is not None:
                    return total
                if not (done.sent or done.failed or done.released):
                    break
        return total

    def step(self, alias: str) -> Pass:
        """Claim one batch on ``alias``, publish it, and record what happened."""
        self.discover()
        token = f"{self.id}:{next(self._claims)}"
        rows = self._claim(alias, token)
        if not rows:
            return Pass()
        started = monotonic()
        messages, broken, unresolved = self._messages(rows)
        done = Pass()
        if unresolved:  # released before the publish: a relay that can resolve them need not wait for it
            done.unresolved = self._release_unresolved(alias, unresolved, token)
            done.released = len(unresolved)
        outcome = publish(messages, stop=self._stop)
        done.unreachable = outcome.unreachable
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
            _give_back(connection, ids, token, now)
            done.released += len(ids)
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

    def discover(self) -> Discovery:
        """Import the task modules as each queue's worker would, once; :meth:`step` calls it first.

        Raises:
            TaskDiscoveryError: A module of ``OUTBOX["IMPORTS"]`` (or one a
                queue's discovery found) does not import: the relay cannot start.
        """
        if self._discovery is None:
            self._discovery = discover_tasks()
        return self._discovery

    @property
    def unresolved(self) -> dict[tuple[str, str], str]:
        """``(executor, task)`` -> the fix, for every name this relay could not resolve (and now skips)."""
        return dict(self._unresolved)

    # -- one batch ---------------------------------------------------------------------

    def _claim(self, alias: str, token: str) -> list[tuple[Any, ...]]:
        connection = connections[alias]
        now = self.clock()
        until = now + self.lease
        if connection.features.has_select_for_update_skip_locked:
            with transaction.atomic(using=alias):
                due = OutboxMessage.objects.using(alias).filter(state=READY, available_at__lte=now)
                for executor, task in self._unresolved:
                    due = due.exclude(executor=executor, task=task)
                rows = list(
                    due.select_for_update(skip_locked=True).order_by("id").values_list(*_FIELDS)[: self.batch_size]
                )
                if rows:
                    _update_ids(
                        connection, [row[0] for row in rows], "available_at = %s, claimed_by = %s", [until, token]
                    )
            return rows
        skip = " AND NOT (executor = %s AND task = %s)" * len(self._unresolved)
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET available_at = %s, claimed_by = %s WHERE id IN "
                f"(SELECT id FROM {TABLE} WHERE state = %s AND available_at <= %s{skip} ORDER BY id LIMIT %s)",
                [until, token, READY, now, *itertools.chain.from_iterable(self._unresolved), self.batch_size],
            )
            cursor.execute(
                f"SELECT {', '.join(_FIELDS)} FROM {TABLE} WHERE claimed_by = %s AND state = %s ORDER BY id",
                [token, READY],
            )
            return [tuple(row) for row in cursor.fetchall()]

    def _messages(
        self, rows: list[tuple[Any, ...]]
    ) -> tuple[list[Message], list[tuple[Any, BaseException]], list[tuple[Any, BaseException]]]:
        """The rows as messages; the rows that are broken (an attempt each); those this process cannot resolve."""
        messages: list[Message] = []
        broken: list[tuple[Any, BaseException]] = []
        unresolved: list[tuple[Any, BaseException]] = []
        for row in rows:
            _, intent_id, name, executor, payload, _ = row
            key = (executor, name)
            try:
                carrier = carrier_named(executor)
                task = self._tasks.get(key)
                if task is None:
                    task = self._tasks[key] = carrier.resolve(name)
            except UNRESOLVED as error:
                # The relay's configuration, not the row: no attempt, and another relay may resolve it.
                unresolved.append((row, error))
                continue
            except Exception as error:
                broken.append((row, error))
                continue
            try:
                args, kwargs, options, *traced = json.loads(payload)
            except Exception as error:
                broken.append((row, error))
                continue
            trace = traced[0] if traced and isinstance(traced[0], dict) else None
            messages.append(Message(intent_id, carrier, task, args, kwargs, options, ref=row, name=name, trace=trace))
        return messages, broken, unresolved

    def _release_unresolved(
        self, alias: str, rows: list[tuple[Any, BaseException]], token: str
    ) -> dict[tuple[str, str], str]:
        """Give the rows back as they were (due, no attempt), and report each name once; the new names."""
        _give_back(connections[alias], [row[0] for row, _ in rows], token, self.clock())
        new: dict[tuple[str, str], str] = {}
        for row, error in rows:
            key = (row[3], row[2])
            if key in self._unresolved:
                continue
            fix = str(getattr(error, "fix", "") or error)
            self._unresolved[key] = new[key] = fix
            _tell(
                self,
                task_unresolved,
                logging.ERROR,
                "airlock relay %(relay)s cannot resolve the %(executor)s task %(task)r (rows on %(database)r): "
                "%(error)s. Its rows stay ready, with no attempt spent, for a relay that can; this one skips "
                "them until it restarts. Fix: %(fix)s",
                database=alias,
                executor=row[3],
                task=row[2],
                error=str(getattr(error, "problem", "") or _describe(error)),
                fix=fix,
            )
            if self.metrics is not None:
                self.metrics.unresolved.add(1, {"airlock.database": alias, "airlock.task": row[2]})
        return new

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

    def recover_undecided(self, alias: str) -> int:
        """Deliver (or hold) the ``pending`` rows on ``alias`` of writers that died undecided; return how many.

        A row is ``pending`` from its transaction's commit until its scope
        decides; its writer holds a lock on the database for as long as it
        lives (``_writers``). Rows older than :data:`UNDECIDED_GRACE` whose
        writer's lock is gone belong to a process killed in between: their data
        committed, so they become ``ready`` now (``undecided="deliver"``) or
        ``held`` (``"hold"``). Each writer's rows change in one ``UPDATE`` that
        only takes rows still ``pending``, so relays running at once, or a scope
        deciding late, never conflict with it.
        """
        connection = connections[alias]
        now = self.clock()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT written_by FROM {TABLE} WHERE state = %s AND created_at < %s AND written_by <> ''",
                [PENDING, now - UNDECIDED_GRACE],
            )
            writers = [row[0] for row in cursor.fetchall()]
        if not writers:
            return 0
        state = READY if self.undecided == "deliver" else HELD
        recovered = 0
        for writer in dead_writers(connection, writers):
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {TABLE} SET state = %s, available_at = %s WHERE state = %s AND written_by = %s",
                    [state, now, PENDING, writer],
                )
                count = int(max(cursor.rowcount, 0))
            if not count:
                continue  # another relay was first
            recovered += count
            _tell(
                self,
                rows_recovered,
                logging.WARNING,
                "airlock relay: %(count)d row(s) on %(database)r were committed by a process that died before its "
                "scope decided (writer %(writer)s); they are %(state)s"
                + (" and will be delivered" if state == READY else ": inspect them, then `airlock_requeue --held`"),
                database=alias,
                writer=writer,
                count=count,
                state=state,
            )
            if self.metrics is not None:
                self.metrics.recovered.add(count, {"airlock.database": alias, "airlock.outbox.state": state})
        return recovered

    def hold_stale(self, alias: str) -> int:
        """Turn rows ``pending`` for longer than ``hold_after`` into ``held`` ones; return how many.

        What :meth:`recover_undecided` leaves: rows that name no writer (written
        before writers had ids, or while the writer could not take its lock),
        and rows a live writer leaves undecided that long.
        """
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
                "airlock relay: %(count)d row(s) on %(database)r were committed but their scope has not decided for "
                "HOLD_AFTER (they name no live writer the relay can ask about, or their writer is stuck); they are "
                "held: inspect them, then `manage.py airlock_requeue --held` or purge them",
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


def _give_back(connection: Any, ids: Sequence[Any], token: str, now: float) -> None:
    """Release rows this relay claimed (``token``) and did not try: due at once, no attempt spent."""
    _update_ids(
        connection, ids, "available_at = %s, claimed_by = ''", [now], extra="claimed_by = %s", extra_values=[token]
    )


def served_databases(databases: Sequence[str] | None = None) -> list[str]:
    """The aliases a relay serves: ``databases``, else ``OUTBOX["DATABASES"]``, else every alias."""
    return list(databases or outbox_options()["DATABASES"] or connections.settings)


def _duration(seconds: float) -> str:
    """``604800`` as ``"7d"``, ``90`` as ``"90s"``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


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
