"""Writer liveness: rows of a process killed after its commit, before its scope decided, need no person.

Real processes (``python -m tests.outbox_writer``) commit intents and wait before
their scope decides; the test SIGKILLs them and drives the relay as a class. Runs
on PostgreSQL, and with AIRLOCK_TEST_DB=sqlite (file databases, which the writer
processes share) or =mariadb on those. Recovery times are measured by
bench/bench_writer_recovery.py, not asserted here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

import airlock
from airlock.integrations.django.outbox import (
    HELD,
    PENDING,
    READY,
    SENT,
    OutboxMessage,
    Relay,
    _writers,
    configure_outbox,
    requeue,
)
from airlock.integrations.django.outbox._own_connections import close_own_connections
from airlock.signals.outbox import rows_recovered
from tests.djangoproject.checks import require_database
from tests.outbox_process import environment
from tests.outbox_support import MEMORY_QUEUE, memory_messages, memory_record, relay_outbox, states

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default"])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_GUARD = 60.0  # seconds before a test gives up waiting: a bound on a hang, not a timing claim


@pytest.fixture(autouse=True)
def outbox() -> Iterator[None]:
    connection = connections["default"]
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        # tests/djangoproject/settings.py makes SQLite's test databases files, which the
        # writer processes share; an in-memory one is this process's alone.
        pytest.skip("the writer processes need a SQLite file database to share")
    with relay_outbox():
        yield


@pytest.fixture
def recovered() -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def receive(sender: Any, **fields: Any) -> None:
        seen.append(fields)

    rows_recovered.connect(receive, weak=False)
    yield seen
    rows_recovered.disconnect(receive)


class Writer:
    """A writer process, waiting before its scope decides."""

    def __init__(self, mode: str = "undecided", **extra: Any) -> None:
        names = {"default": connections["default"].settings_dict["NAME"]}
        env = environment(names, "memory://", "outbox_memory", MEMORY_QUEUE, **extra)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.outbox_writer", mode],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _children.append(self.process)

    def line(self) -> list[str]:
        """The next line the process printed, split: raises with its stderr if it ended instead."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.kill()
            raise AssertionError(f"the writer ended: {self.process.communicate()[1]}")
        return line.split()

    def committed(self) -> str:
        """Wait for the commit; the writer id its rows carry."""
        word, pid, writer = self.line()
        assert (word, int(pid)) == ("committed", self.process.pid)
        return writer

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


_children: list[subprocess.Popen[str]] = []
_forks: list[int] = []  # pids of the writers' own children, which no Popen waits for


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test() -> Iterator[None]:
    yield
    while _forks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_forks.pop(), signal.SIGKILL)
    while _children:
        process = _children.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def pids_killed(*pids: int) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def written_by(state: str | None = None) -> dict[str, int]:
    """How many rows each writer wrote (in ``state``, if given)."""
    found: dict[str, int] = {}
    rows = OutboxMessage.objects.all() if state is None else OutboxMessage.objects.filter(state=state)
    for writer in rows.values_list("written_by", flat=True):
        found[writer] = found.get(writer, 0) + 1
    return found


def relay_until(relay: Relay, done: Any) -> int:
    """Run the relay pass after pass until ``done()``; how many rows it recovered."""
    recovered = 0
    deadline = time.monotonic() + HANG_GUARD
    while not done():
        assert time.monotonic() < deadline, f"the relay did not get there: {written_by()}"
        recovered += relay.run_once().recovered
        time.sleep(0.05)
    return recovered


@pytest.mark.parametrize("undecided", ["deliver", "hold"])
def test_a_writer_killed_after_its_commit_has_its_rows_recovered_and_a_live_ones_are_untouched(
    undecided, recovered, caplog
):
    configure_outbox({"FAST_PATH": False, "UNDECIDED": undecided})
    dead, alive = Writer(count=3, tag="dead"), Writer(count=2, tag="alive")
    dead_id, alive_id = dead.committed(), alive.committed()
    assert dead_id != alive_id
    assert _writers.parse(dead_id)[2] == dead.process.pid
    assert written_by(PENDING) == {dead_id: 3, alive_id: 2}
    dead.kill()
    relay = Relay(databases=["default"])
    expected = READY if undecided == "deliver" else HELD
    with caplog.at_level(logging.WARNING, logger="airlock.integrations.django.outbox"):
        count = relay_until(relay, lambda: written_by(PENDING) == {alive_id: 2})
    assert count == 3
    assert recovered == [{"database": "default", "writer": dead_id, "count": 3, "state": expected}]
    assert f"writer {dead_id}" in caplog.text
    sent = memory_messages()
    if undecided == "deliver":
        assert sorted(args for _, args, _ in sent) == [["dead", 0], ["dead", 1], ["dead", 2]]
        assert written_by(SENT) == {dead_id: 3}
    else:
        assert sent == []
        assert written_by(HELD) == {dead_id: 3}
    # The live writer's rows, past the grace, stay its own to decide, pass after pass.
    time.sleep(1.2)
    for _ in range(3):
        assert relay.run_once().recovered == 0
    assert written_by(PENDING) == {alive_id: 2}
    alive.kill()
    assert relay_until(relay, lambda: not written_by(PENDING)) == 2
    expected_now = [["alive", 0], ["alive", 1]]
    if undecided == "hold":
        assert requeue("default", states=[HELD]) == 5  # a person sends them
        relay.run_once()
        expected_now = [*expected_now, ["dead", 0], ["dead", 1], ["dead", 2]]
    assert sorted(args for _, args, _ in memory_messages()) == expected_now
    assert states() == [SENT] * 5


def test_a_second_relay_finds_nothing_left_to_recover_and_the_metric_counts_the_rows_once():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from airlock.integrations.django.outbox._metrics import OutboxMetrics

    reader = InMemoryMetricReader()
    metrics = OutboxMetrics(MeterProvider(metric_readers=[reader]), databases=["default"])
    writer = Writer(count=2)
    writer_id = writer.committed()
    writer.kill()
    time.sleep(1.1)  # past the grace
    first, second = Relay(databases=["default"], metrics=metrics), Relay(databases=["default"], metrics=metrics)
    assert first.recover_undecided("default") == 2
    assert second.recover_undecided("default") == 0
    assert written_by(READY) == {writer_id: 2}
    counted = [
        (dict(point.attributes), point.value)
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "airlock.outbox.recovered"
        for point in metric.data.data_points
    ]
    metrics.close()
    assert counted == [({"airlock.database": "default", "airlock.outbox.state": READY}, 2)]


@pytest.mark.parametrize("first", ["child", "parent"])
def test_a_forked_child_is_a_writer_of_its_own_and_neither_death_makes_the_other_look_dead(first):
    forked = Writer("fork")
    seen = dict((role, (int(pid), writer)) for role, pid, writer in (forked.line(), forked.line()))
    (parent_pid, parent_id), (child_pid, child_id) = seen["parent"], seen["child"]
    _forks.append(child_pid)
    assert parent_pid == forked.process.pid and child_pid != parent_pid
    assert parent_id != child_id
    assert written_by(PENDING) == {parent_id: 1, child_id: 1}
    killed, kept = (child_id, parent_id) if first == "child" else (parent_id, child_id)
    pids_killed(child_pid if first == "child" else parent_pid)
    relay = Relay(databases=["default"])
    relay_until(relay, lambda: written_by(READY) == {killed: 1} or written_by(SENT) == {killed: 1})
    time.sleep(1.2)
    for _ in range(3):
        relay.run_once()
    assert written_by(PENDING) == {kept: 1}
    pids_killed(parent_pid if first == "child" else child_pid)
    relay_until(relay, lambda: not written_by(PENDING))
    assert states() == [SENT, SENT]


def _undecided_here(*values: Any) -> None:
    """Commit rows in this process and leave their scope undecided, as a writer that died would."""
    with pytest.raises(RuntimeError), airlock.scope():
        with transaction.atomic():
            for value in values:
                airlock.enqueue(memory_record, value)
        airlock.get_current_scope()._entries = {}  # its memory is gone: the rows are left pending
        raise RuntimeError


def test_rows_that_name_no_writer_keep_hold_after():
    _undecided_here(1)
    OutboxMessage.objects.update(written_by="")  # older rows, or a writer without its lock
    now = [time.time() + 5]
    relay = Relay(databases=["default"], hold_after=60, clock=lambda: now[0])
    done = relay.run_once()
    assert (done.recovered, done.held) == (0, 0)
    now[0] += 61
    done = relay.run_once()
    assert (done.recovered, done.held) == (0, 1)
    assert states() == [HELD]


def test_a_live_writers_rows_still_pending_after_hold_after_are_held():
    _undecided_here(1)
    assert written_by() == {_writers.writer_id(): 1}  # this process: alive
    now = [time.time() + 5]
    relay = Relay(databases=["default"], hold_after=60, clock=lambda: now[0])
    assert relay.run_once().recovered == 0
    now[0] += 61
    done = relay.run_once()
    assert (done.recovered, done.held) == (0, 1)


def test_after_its_lock_is_closed_a_writer_looks_dead_and_its_next_write_takes_the_lock_again():
    _undecided_here(1)
    relay = Relay(databases=["default"], clock=lambda: time.time() + 5)
    assert relay.run_once().recovered == 0
    close_own_connections("default")  # what the test-database teardown does
    # The server ends the lock's session a moment after the client closed it.
    recovered, deadline = 0, time.monotonic() + 10
    while not recovered and time.monotonic() < deadline:
        recovered = relay.recover_undecided("default")
        time.sleep(0.02)
    assert recovered == 1
    _undecided_here(2)
    assert relay.recover_undecided("default") == 0  # locked again
    assert written_by(PENDING) == {_writers.writer_id(): 1}


def test_after_the_first_row_a_write_opens_nothing_more():
    _undecided_here(1)
    lock = _writers._locks.get("default")
    opened: list[Any] = []
    from django.db.backends.signals import connection_created

    def count(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(connection)

    connection_created.connect(count, weak=False)
    try:
        for value in range(5):
            _undecided_here(value)
    finally:
        connection_created.disconnect(count)
    assert opened == []
    assert _writers._locks.get("default") is lock


def test_a_writer_that_cannot_take_its_lock_names_no_writer_and_warns_once(monkeypatch, caplog):
    close_own_connections("default")

    def refused(alias: str, connection: Any) -> Any:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(_writers, "_lock", refused)
    monkeypatch.setattr(_writers, "RETRY", 0.0)  # it tries again at each write, and still says it once
    with caplog.at_level(logging.WARNING, logger="airlock.integrations.django.outbox"):
        _undecided_here(1)
        _undecided_here(2)
    assert written_by() == {"": 2}
    assert caplog.text.count("could not take its writer lock") == 1
    monkeypatch.undo()
    _undecided_here(3)
    assert written_by() == {"": 2, _writers.writer_id(): 1}


def test_undecided_names_its_values_when_it_is_wrong():
    with pytest.raises(ImproperlyConfigured, match=r"'UNDECIDED'.*'deliver'.*'hold'.*did you mean 'deliver'"):
        configure_outbox({"UNDECIDED": "delivr"})
    with pytest.raises(ValueError, match="'deliver' or 'hold'"):
        Relay(databases=["default"], undecided="drop")


def test_a_lock_whose_session_the_server_ended_is_taken_again_on_the_next_new_connection():
    vendor = connections["default"].vendor
    if vendor == "sqlite":
        pytest.skip("a file lock has no session to end")
    _undecided_here(1)
    lock = _writers._locks["default"]
    with lock.wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()" if vendor == "postgresql" else "SELECT CONNECTION_ID()")
        session = cursor.fetchone()[0]
    with connections["default"].cursor() as cursor:  # what a DBA (or a restart) does
        cursor.execute(f"SELECT pg_terminate_backend({session})" if vendor == "postgresql" else f"KILL {session}")
    relay = Relay(databases=["default"], clock=lambda: time.time() + 5)
    deadline = time.monotonic() + HANG_GUARD
    # The lock is free, and the session's socket closed (MariaDB frees the lock a moment before).
    while not (_writers.dead_writers(connections["default"], [_writers.writer_id()]) and lock.is_lost()):
        assert time.monotonic() < deadline, "the server never ended the lock's session"
        time.sleep(0.05)
    connections["default"].close()
    connections["default"].ensure_connection()  # a new connection: the writer looks at its lock
    assert _writers._locks.get("default") is not lock
    _undecided_here(2)  # and takes it again before its next row
    assert _writers.dead_writers(connections["default"], [_writers.writer_id()]) == []
    assert relay.recover_undecided("default") == 0
    assert written_by(PENDING) == {_writers.writer_id(): 2}
