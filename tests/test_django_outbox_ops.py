"""Running the relay in production: its liveness file, its progress line and its retention.

Runs on PostgreSQL, and with AIRLOCK_TEST_DB=sqlite or =mariadb on those. A
relay serving in a thread of the test (``running``) is stopped at the end of
its block; ``wait_for`` waits for what it did, never for a length of time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext, override_settings

from airlock.integrations.django.outbox import (
    DEAD,
    HELD,
    PENDING,
    READY,
    SENT,
    OutboxMessage,
    ProcessedIntent,
    Relay,
    _relay,
    configure_outbox,
)
from airlock.integrations.django.outbox._carriers import carrier_named
from airlock.integrations.django.outbox._retention import as_datetime
from airlock.signals.outbox import relay_batch, relay_paused, relay_progress
from tests.djangoproject.checks import require_database
from tests.outbox_process import environment
from tests.outbox_support import (
    MEMORY_QUEUE,
    Clock,
    make_app,
    relay_outbox,
    states,
    write_ready,
)
from tests.own_redis import free_port

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGGER = "airlock.integrations.django.outbox"
WEEK = 7 * 86400


@pytest.fixture(autouse=True)
def outbox() -> Iterator[None]:
    with relay_outbox():
        yield


@pytest.fixture
def clock() -> Clock:
    return Clock()


def value_of(row_id: int) -> Any:
    return json.loads(OutboxMessage.objects.get(id=row_id).payload)[0][0]


def ids_by_value() -> dict[Any, int]:
    return {value_of(row_id): row_id for row_id in OutboxMessage.objects.values_list("id", flat=True)}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Until ``condition()`` is true; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.01)


@contextmanager
def running(relay: Relay) -> Iterator[None]:
    """``relay.run()`` in a thread of its own, stopped (and checked to have stopped cleanly) at the end."""
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            relay.run()
        except BaseException as error:  # reported by the test, not lost in the thread
            failed.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=serve, name="relay-under-test", daemon=True)
    thread.start()
    try:
        yield
    finally:
        relay.stop()
        thread.join(30)
    assert not thread.is_alive(), "the relay did not stop"
    assert not failed, failed


# -- the liveness file --------------------------------------------------------------------------


def test_the_liveness_file_is_created_then_touched_on_every_loop(tmp_path):
    path = tmp_path / "alive"
    worker = Relay(databases=["default"], poll=0.01, liveness_file=path, retention=None)
    with running(worker):
        wait_for(path.exists, "liveness file")
        for _ in range(3):  # set back each time, touched again each time
            os.utime(path, (1, 1))
            wait_for(lambda: path.stat().st_mtime > 1, "touch of the liveness file")


def test_the_liveness_file_is_touched_during_a_long_pause_for_an_unreachable_broker(tmp_path, monkeypatch):
    monkeypatch.setattr(_relay, "_BEAT_EVERY", 0.01)
    _, record = make_app("outbox_ops_down", f"redis://127.0.0.1:{free_port()}/0")
    write_ready(1, task=record)
    path = tmp_path / "alive"
    worker = Relay(databases=["default"], poll=0.01, backoff_max=600.0, liveness_file=path, retention=None)
    worker._pause = 60.0  # so the first pause lasts 120 s: the whole test happens inside it
    pauses: list[float] = []

    def paused(sender: Any, **kwargs: Any) -> None:
        if sender is worker:
            os.utime(path, (1, 1))  # from here on, only a touch during the pause moves it
            pauses.append(kwargs["seconds"])

    with relay_paused.connected_to(paused), running(worker):
        wait_for(lambda: pauses and path.stat().st_mtime > 1, "touch during the pause")
        assert pauses == [120.0]  # still the first pause
    assert list(OutboxMessage.objects.values_list("state", "attempts")) == [(READY, 0)]


def test_a_drain_touches_the_liveness_file_after_every_batch(tmp_path):
    """A long drain after an outage is a live relay: each batch touches the file, not only each loop."""
    write_ready(1, 2, 3)
    path = tmp_path / "alive"
    worker = Relay(databases=["default"], batch_size=1, liveness_file=path, retention=None)
    touched: list[bool] = []

    def batch(sender: Any, **kwargs: Any) -> None:
        if sender is worker:
            touched.append(path.exists())

    with relay_batch.connected_to(batch):
        assert worker.run_once().sent == 3
    assert touched == [False, True, True]  # the second batch found what the first one's touch made


def test_relay_once_touches_the_liveness_file_once(tmp_path):
    path = tmp_path / "alive"
    write_ready(1)
    out = io.StringIO()
    call_command("airlock_relay", "--once", "--database", "default", "--liveness-file", str(path), stdout=out)
    assert path.exists()
    assert "1 sent" in out.getvalue()
    os.utime(path, (1, 1))
    call_command("airlock_relay", "--once", "--liveness-file", str(path), stdout=io.StringIO())
    assert path.stat().st_mtime > 1


def test_the_documented_probes_pass_on_a_fresh_file_and_fail_on_a_stale_one(tmp_path):
    page = (Path(ROOT) / "docs" / "reliability.md").read_text()
    section = page.split("### A liveness probe", 1)[1].split("\n### ", 1)[0]
    (probe,) = re.findall(r'command: \["sh", "-c", "(.*)"\]', section)
    (also,) = re.findall(r"\(`(find .*?)` says the same", section)
    path = tmp_path / "alive"
    Relay(databases=["default"], liveness_file=path).touch_liveness_file()
    for command in (probe, also):
        command = command.replace("/tmp/relay-alive", str(path))
        assert subprocess.run(["sh", "-c", command]).returncode == 0, command
        os.utime(path, (time.time() - 120, time.time() - 120))
        assert subprocess.run(["sh", "-c", command]).returncode != 0, command
        path.touch()


def test_a_liveness_file_that_cannot_be_written_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match=r"--liveness-file .*missing.*: cannot touch it"):
        call_command("airlock_relay", "--once", "--liveness-file", str(tmp_path / "missing" / "alive"))


# -- the progress line --------------------------------------------------------------------------


def test_every_progress_every_seconds_the_relay_says_what_it_did(clock, caplog, monkeypatch):
    write_ready("old")
    OutboxMessage.objects.update(state=SENT, sent_at=clock.now - WEEK - 60)  # for retention to delete
    write_ready(1, 2, 3, "poison")
    app, renamed = make_app("outbox_ops_renamed", "memory://")
    write_ready("lost", task=renamed)
    del app.tasks["outbox_ops_renamed.record"]  # a task this relay's process cannot resolve
    carrier = carrier_named("celery")
    send = carrier.send

    def refuse_poison(task: Any, args: list[Any], *rest: Any) -> Any:
        if args == ["poison"]:
            raise ValueError("the broker refused this one")
        return send(task, args, *rest)

    monkeypatch.setattr(carrier, "send", refuse_poison)
    worker = Relay(databases=["default"], clock=clock, poll=0.01, max_attempts=1, progress_every=60.0)
    said: list[dict[str, Any]] = []

    def progress(sender: Any, **kwargs: Any) -> None:
        if sender is worker:
            said.append(kwargs)

    with relay_progress.connected_to(progress), caplog.at_level(logging.INFO, LOGGER), running(worker):
        wait_for(lambda: sorted(states()) == [DEAD, READY, SENT, SENT, SENT], "rows published, the old one deleted")
        assert said == []  # the relay's clock has not moved: no interval is over
        clock.now += 61
        wait_for(lambda: said, "progress line")
        write_ready(4)
        wait_for(lambda: states().count(SENT) == 4, "the row written after the line")
    first, last = said
    assert first == {
        "sent": 3,
        "failed": 1,
        "dead": 1,
        "held": 0,
        "recovered": 0,
        "unresolved": 1,
        "purged": 1,
        "seconds": 61.0,
    }
    assert (last["sent"], last["failed"], last["purged"]) == (1, 0, 0)  # the partial interval, said at the stop
    lines = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    (started,) = [line for line in lines if " serving " in line]
    assert started.endswith(
        "serving default: batches of 200, polling every 0.01s; a progress line every 1m; "
        "deleting sent rows and processed intent ids after 7d"
    )
    (line,) = [line for line in lines if "last 61s" in line]
    assert line.endswith(
        "last 61s: 3 sent, 1 failed (1 dead), 0 held, 0 recovered, 1 task name(s) unresolved, 1 purged"
    )


def test_the_lines_in_the_docs_are_the_lines_the_relay_writes(clock, caplog):
    page = (Path(ROOT) / "docs" / "reliability.md").read_text()
    section = page.split("### The progress line", 1)[1].split("\n### ", 1)[0]
    documented = re.findall(r"^```text\n(.*?)\n```", section, flags=re.M | re.S)
    worker = Relay(databases=["default"], clock=clock, batch_size=200, poll=1.0, progress_every=60.0, retention=WEEK)
    worker.id = "web-1:7:a3f2c1"
    with caplog.at_level(logging.INFO, LOGGER):
        worker._announce()
        worker._progress = _relay._Progress(clock.now - 60, sent=1204, failed=2, recovered=3, purged=500)
        worker._report()
    assert [record.getMessage() for record in caplog.records if record.name == LOGGER] == documented


def test_progress_every_0_says_nothing(clock):
    write_ready(1)
    worker = Relay(databases=["default"], clock=clock, poll=0.01, progress_every=0, retention=None)
    said: list[dict[str, Any]] = []
    with relay_progress.connected_to(lambda sender, **kwargs: said.append(kwargs)), running(worker):
        wait_for(lambda: states() == [SENT], "row published")
        clock.now += 3600
    assert said == []


def test_the_relay_command_serves_touches_its_file_and_says_what_it_did_at_sigterm(tmp_path):
    """``manage.py airlock_relay`` in a process of its own, its log on stderr with no LOGGING configured."""
    write_ready(1, 2)
    path = tmp_path / "alive"
    names = {alias: connections[alias].settings_dict["NAME"] for alias in ("default", "other")}
    arguments = ["--liveness-file", str(path), "--progress-every", "1h"]
    env = environment(names, "memory://", "outbox_memory", MEMORY_QUEUE, relay_args=json.dumps(arguments))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_process", "relay"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (path.exists() and states() == [SENT, SENT]) or process.poll() is not None, "relay at work")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, err
    assert "serving default, other: batches of 100, polling every 0.05s; a progress line every 1h;" in err
    assert "2 sent, 0 failed (0 dead), 0 held" in err  # the partial interval, said at SIGTERM
    assert err.rstrip().endswith("stopped")


# -- retention ----------------------------------------------------------------------------------


def old_and_young_rows(clock: Clock, age: float) -> None:
    """Five sent rows older than ``age``, a young sent one, and a row in every other state, old too."""
    write_ready("old0", "old1", "old2", "old3", "old4", "young", READY, PENDING, DEAD, HELD)
    long_ago = clock.now - age - 60
    OutboxMessage.objects.update(state=SENT, sent_at=long_ago, created_at=long_ago, available_at=long_ago)
    by_value = ids_by_value()
    for state in (READY, PENDING, DEAD, HELD):  # old, and even with a sent_at: never deleted
        OutboxMessage.objects.filter(id=by_value[state]).update(state=state)
    OutboxMessage.objects.filter(id=by_value["young"]).update(sent_at=clock.now - age + 60)
    for name in ("p0", "p1", "p2", "p3", "p4", "p5"):
        ProcessedIntent.objects.create(intent_id=name)  # processed now: young
    ProcessedIntent.objects.filter(intent_id__in=["p0", "p1", "p2", "p3"]).update(processed_at=as_datetime(long_ago))


def test_retention_deletes_old_sent_rows_and_processed_ids_a_batch_per_statement(clock):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from airlock.integrations.django.outbox._metrics import OutboxMetrics

    reader = InMemoryMetricReader()
    metrics = OutboxMetrics(MeterProvider(metric_readers=[reader]), databases=["default"])
    old_and_young_rows(clock, 3600)
    worker = Relay(databases=["default"], clock=clock, retention=3600, purge_batch=2, metrics=metrics)
    with CaptureQueriesContext(connections["default"]) as queries:
        assert worker.apply_retention(budget=0) == 2  # its budget spent after the first full batch
    assert len([query for query in queries if query["sql"].startswith("DELETE")]) == 1
    with CaptureQueriesContext(connections["default"]) as queries:
        assert worker.apply_retention() == 3 + 4
    deletes = [query["sql"] for query in queries if query["sql"].startswith("DELETE")]
    # 2 + 1 sent rows, 2 + 2 processed ids: never more than purge_batch per statement.
    assert [("airlock_outbox" in sql, "airlock_processed_intent" in sql) for sql in deletes] == [
        (True, False),
        (True, False),
        (False, True),
        (False, True),
    ]
    left = OutboxMessage.objects.values_list("state", "payload")
    assert sorted((state, json.loads(payload)[0][0]) for state, payload in left) == [
        (DEAD, DEAD),
        (HELD, HELD),
        (PENDING, PENDING),
        (READY, READY),
        (SENT, "young"),
    ]
    assert sorted(ProcessedIntent.objects.values_list("intent_id", flat=True)) == ["p4", "p5"]
    assert worker.apply_retention() == 0
    purged = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "airlock.outbox.purged":
                    for point in metric.data.data_points:
                        purged[point.attributes["airlock.table"]] = point.value
                        assert point.attributes["airlock.database"] == "default"
    assert purged == {"airlock_outbox": 5, "airlock_processed_intent": 4}


def test_retention_none_deletes_nothing(clock):
    configure_outbox({"FAST_PATH": False, "RETENTION": None})
    old_and_young_rows(clock, WEEK)
    worker = Relay(databases=["default"], clock=clock)
    assert worker.retention is None
    assert worker.apply_retention() == 0
    out = io.StringIO()
    call_command("airlock_relay", "--once", "--database", "default", stdout=out)
    assert "RETENTION" not in out.getvalue()
    assert OutboxMessage.objects.count() == 10
    assert ProcessedIntent.objects.count() == 6


def test_relay_once_applies_retention_and_says_so(clock):
    old_and_young_rows(clock, WEEK)  # on the real clock too: the command's relay uses it
    out = io.StringIO()
    call_command("airlock_relay", "--once", "--database", "default", stdout=out)
    assert "9 row(s) older than RETENTION deleted" in out.getvalue()
    assert OutboxMessage.objects.count() == 5


@override_settings(USE_TZ=False)
def test_without_use_tz_processed_ids_are_compared_in_local_time(clock):
    """Without USE_TZ, ``processed_at`` is naive local time, as ``auto_now_add`` wrote it."""
    cutoff = clock.now - 86400
    for name, at in (("old", cutoff - 2 * 3600), ("young", cutoff + 2 * 3600)):
        ProcessedIntent.objects.create(intent_id=name)
        ProcessedIntent.objects.filter(intent_id=name).update(processed_at=datetime.fromtimestamp(at))
    assert Relay(databases=["default"], clock=clock, retention=86400).apply_retention() == 1
    assert list(ProcessedIntent.objects.values_list("intent_id", flat=True)) == ["young"]


def test_two_relays_applying_retention_at_once_delete_each_row_once(clock):
    write_ready(*range(120))
    OutboxMessage.objects.update(state=SENT, sent_at=clock.now - 7200)
    start = threading.Barrier(2)
    deleted: list[int] = []
    failed: list[BaseException] = []

    def purge() -> None:
        try:
            worker = Relay(databases=["default"], clock=clock, retention=3600, purge_batch=7)
            start.wait(10)
            deleted.append(worker.apply_retention(budget=None))
        except BaseException as error:
            failed.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=purge) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failed, failed
    assert sum(deleted) == 120
    assert OutboxMessage.objects.count() == 0


# -- the options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("PROGRESS_EVERY", -1, "must be a number of seconds >= 0"),
        ("PROGRESS_EVERY", "60", "must be a number of seconds >= 0"),
        ("RETENTION", 0, "must be a number of seconds > 0"),
        ("RETENTION", -60.0, "must be a number of seconds > 0"),
        ("RETENTION", "7d", r"e\.g\. 7 \* 86400"),
        ("RETENTION", True, "or None to keep"),
    ],
    ids=["progress-negative", "progress-text", "retention-0", "retention-negative", "retention-text", "retention-bool"],
)
def test_bad_values_are_refused_naming_the_option(key, value, says):
    with pytest.raises(ImproperlyConfigured, match=rf"\['{key}'\] {says}|\['{key}'\].*{says}"):
        configure_outbox({key: value})


def test_the_defaults_are_a_line_a_minute_and_a_week_of_retention():
    worker = Relay(databases=["default"])
    assert (worker.progress_every, worker.retention) == (60.0, WEEK)
    configure_outbox({"PROGRESS_EVERY": 0, "RETENTION": None})
    worker = Relay(databases=["default"])
    assert (worker.progress_every, worker.retention) == (0, None)


def test_progress_every_on_the_command_takes_a_duration():
    with pytest.raises(CommandError, match="--progress-every 'soon'"):
        call_command("airlock_relay", "--once", "--progress-every", "soon")
