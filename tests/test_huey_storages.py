"""Huey end to end: the executor and ``airlock_task`` on real Redis and on SQLite.

One Huey consumer (one worker thread) per storage consumes a unique Huey instance
for the whole module. A second instance, ``idle``, has no consumer, so what
reaches it stays countable in the storage itself.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huey import RedisHuey, SqliteHuey
from huey.api import Result

import airlock
from airlock.integrations.huey import airlock_task, huey_executor
from tests.conftest import require_service
from tests.otel_support import instrumented, send_through_worker

pytestmark = pytest.mark.one_lane  # real storages and consumers: the same Huey on every lane

REDIS_URL = "redis://127.0.0.1:6379/0"
RUN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
TIMEOUT = 10.0


class Rig:
    """A Huey instance with a consumer, an idle one without, the tasks, and their records."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        name = f"airlock-test-huey-{RUN}"
        if kind == "redis":
            self.huey = RedisHuey(name, url=REDIS_URL)
            self.idle = RedisHuey(f"{name}-idle", url=REDIS_URL)
        else:
            self.idle_file = directory / "idle.db"
            self.huey = SqliteHuey(name, filename=str(directory / "huey.db"))
            self.idle = SqliteHuey(f"{name}-idle", filename=str(self.idle_file))
        self.records: list[tuple[Any, ...]] = []
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        self._declare_tasks()
        self.consumer = self.huey.create_consumer(
            workers=1, periodic=False, initial_delay=0.01, max_delay=0.05, check_worker_health=False
        )

    def _declare_tasks(self) -> None:
        @airlock_task(self.huey, executor=huey_executor, context=True)
        def record(label: str, i: int = 0, key: str | None = None, *, task: Any) -> None:
            self._note(label, i, key, time.monotonic(), task)

        @self.idle.task()
        def idle(label: str) -> None:  # never consumed: no consumer reads the idle instance
            raise AssertionError("the idle Huey has no consumer")

        # No executor given nor configured: follow-ups go out through Huey, the run's own queue.
        @airlock_task(self.huey, context=True)
        def parent(label: str, fail: bool = False, *, task: Any) -> None:
            # retries=2 takes effect only through huey_executor (a plain call of the task ignores it).
            airlock.enqueue(record, f"{label}-child", _dispatch_options={"retries": 2})
            airlock.enqueue(idle, f"{label}-child")
            self._note(f"{label}-parent", self.idle_count(), None, time.monotonic(), task)
            if fail:
                raise RuntimeError("the parent fails after enqueueing")

        @airlock_task(self.huey, retries=1, retry_delay=0)
        def flaky(label: str) -> None:
            with self.lock:
                attempt = self.attempts[label] = self.attempts.get(label, 0) + 1
            airlock.enqueue(record, f"{label}-child", attempt)
            if attempt == 1:
                raise RuntimeError("the first attempt fails and is retried")

        self.record, self.idle_task, self.parent, self.flaky = record, idle, parent, flaky

    def _note(self, *entry: Any) -> None:
        with self.lock:
            self.records.append(entry)

    def idle_count(self) -> int:
        """Tasks sitting in the idle instance's storage, queued or scheduled."""
        return int(self.idle.pending_count() + self.idle.scheduled_count())

    def labelled(self, label: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [entry for entry in self.records if entry[0] == label]

    def wait_for(self, label: str, count: int = 1) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.labelled(label)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{label!r} ran {len(self.labelled(label))} times, expected {count}")
            time.sleep(0.01)
        self.settle()
        return self.labelled(label)

    def settle(self) -> None:
        """Wait until nothing is queued or scheduled, so 'exactly once' can be asserted."""
        deadline = time.monotonic() + TIMEOUT
        while self.huey.pending_count() or self.huey.scheduled_count():
            assert time.monotonic() < deadline, "the consumer did not drain the queue"
            time.sleep(0.01)
        time.sleep(0.1)  # the worker may still be finishing the task it took last

    def start(self) -> None:
        # Consumer.start() installs signal handlers for a consumer process; keep pytest's.
        saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.consumer.start()
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)

    def close(self) -> None:
        self.consumer.stop(graceful=True)
        for huey in (self.huey, self.idle):
            huey.flush()
            huey.storage.close()


@pytest.fixture(scope="module", params=["redis", "sqlite"], ids=["redis", "sqlite"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if request.param == "redis":
        require_service("redis")
    rig = Rig(request.param, tmp_path_factory.mktemp("huey"))
    rig.start()
    try:
        yield rig
    finally:
        rig.close()


def test_flushed_scope_runs_each_task_once_with_its_args(rig: Rig) -> None:
    with airlock.scope(executor=huey_executor):
        intent = airlock.enqueue(rig.record, "once", 7, key="k")
    runs = rig.wait_for("once")
    assert [entry[:3] for entry in runs] == [("once", 7, "k")]
    assert intent.name == "record"


def test_task_options_reach_the_worker(rig: Rig) -> None:
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.record, "options", _dispatch_options={"retries": 3, "id": f"id-{RUN}"})
    (run,) = rig.wait_for("options")
    task = run[4]
    assert (task.retries, task.id) == (3, f"id-{RUN}")


def test_delay_really_delays(rig: Rig) -> None:
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.record, "delayed", _dispatch_options={"delay": 1})
        airlock.enqueue(rig.record, "prompt")
    flushed_at = time.monotonic()
    (prompt,) = rig.wait_for("prompt")
    (delayed,) = rig.wait_for("delayed")
    assert delayed[3] - flushed_at >= 1.0
    assert prompt[3] < delayed[3]


def test_executor_returns_the_result_handle_on_intent_dispatched(rig: Rig) -> None:
    results: list[Any] = []

    def on_dispatched(sender: object, *, intent: object, result: Any) -> None:
        results.append(result)

    airlock.signals.intent_dispatched.connect(on_dispatched)
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.record, "result")
    (result,) = results
    assert isinstance(result, Result)
    rig.wait_for("result")
    assert result.id == rig.labelled("result")[0][4].id


def test_discarded_scope_never_reaches_the_storage(rig: Rig) -> None:
    with pytest.raises(KeyError), airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.idle_task, "discarded")
        airlock.enqueue(rig.idle_task, "discarded-later", _dispatch_options={"delay": 60})
        raise KeyError("the unit of work fails")
    assert rig.idle_count() == 0
    if rig.kind == "sqlite":  # the rows themselves, not just Huey's view of them
        with sqlite3.connect(rig.idle_file) as db:
            assert db.execute("select count(*) from task").fetchone() == (0,)
    with airlock.scope(executor=huey_executor):  # control: the same intents, flushed, do arrive
        airlock.enqueue(rig.idle_task, "flushed")
        airlock.enqueue(rig.idle_task, "flushed-later", _dispatch_options={"delay": 60})
    # Huey queues a delayed task like any other; a consumer moves it to the schedule.
    assert (rig.idle.pending_count(), rig.idle.scheduled_count()) == (2, 0)
    rig.idle.flush()


def test_a_task_without_delay_or_eta_is_stored_to_run_at_once(rig: Rig) -> None:
    """The executor always calls schedule(), which Huey refuses without a time; delay=0 queues it now."""
    rig.idle.flush()
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.idle_task, "at-once")
    assert (rig.idle.pending_count(), rig.idle.scheduled_count()) == (1, 0)
    (stored,) = rig.idle.pending()
    assert stored.args == ("at-once",)
    assert rig.idle.ready_to_run(stored), "a consumer would run it when it takes it, not put it on the schedule"
    rig.idle.flush()


def test_order_is_kept_within_one_flush(rig: Rig) -> None:
    with airlock.scope(executor=huey_executor):
        for i in range(20):
            airlock.enqueue(rig.record, "ordered", i)
    runs = rig.wait_for("ordered", 20)
    assert [entry[1] for entry in runs] == list(range(20))


def test_follow_ups_go_out_only_after_the_task_succeeds(rig: Rig) -> None:
    rig.idle.flush()
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.parent, "ok")
    (parent,) = rig.wait_for("ok-parent")
    (child,) = rig.wait_for("ok-child")
    assert parent[1] == 0, "the follow-up reached the storage while the task was still running"
    assert child[3] > parent[3]
    # Its own task, sent by huey_executor, with an id of its own.
    assert child[4].id != parent[4].id
    assert child[4].retries == 2
    assert rig.idle.pending_count() == 1
    rig.idle.flush()


def test_follow_ups_of_a_failed_task_never_go_out(rig: Rig) -> None:
    rig.idle.flush()
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.parent, "failing", fail=True)
    rig.wait_for("failing-parent")
    assert rig.idle_count() == 0
    assert rig.labelled("failing-child") == []


def test_a_retried_run_sends_its_follow_ups_once(rig: Rig) -> None:
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(rig.flaky, "flaky")
    runs = rig.wait_for("flaky-child")
    assert [entry[1] for entry in runs] == [2], "only the successful second attempt may send"
    assert rig.attempts["flaky"] == 2


def test_the_worker_run_joins_the_trace_of_the_enqueuing_request(rig: Rig) -> None:
    with instrumented() as telemetry:
        hop = send_through_worker(telemetry, huey_executor, rig.record, system="huey")
        rig.wait_for(hop.token)
    # record() takes no **kwargs: it ran, so the carrier never reached its arguments.
    assert hop.consumer.attributes["messaging.system"] == "huey"
