"""Publishing from every process model, each with a real server, worker or command.

The served project is ``tests/servers/`` (one request: a row committed in a
transaction, five Celery tasks through airlock with the outbox on). Each test
runs it the way a user does, on a PostgreSQL database and a Redis of the
module's own, with a real Celery worker consuming the tasks: it counts every
delivery of every task id in Redis, and each run after dropping duplicates with
``first_delivery``. Every test then asserts that each committed task was
delivered, once per id (at-least-once: where a kill can duplicate, the consumer's
dedupe runs it once, and the test says so).

Each test runs for the outbox's ``FAST_PATH`` modes ``inline`` (publish before the
response) and ``background`` (a publisher thread per process; until it exists the
mode publishes inline, so these tests hold either way).

Needs gunicorn, uvicorn and gevent (the ``test`` dependency group): skipped
without them, failed under CI=true. ``AIRLOCK_SKIP_SERVERS=1`` skips the module (the
nox matrix runs it on one lane: it takes over a minute).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.integrations.django.outbox._options import DEFAULTS
from tests.conftest import IN_CI, require_service
from tests.faults import OwnRedis
from tests.servers.harness import (
    Processes,
    Server,
    barrier,
    counted,
    database,
    environment,
    get_many,
    new_token,
    outbox_rows,
    wait_for_deliveries,
    wait_until_due,
)
from tests.servers.keys import delivered_key

if os.environ.get("AIRLOCK_SKIP_SERVERS") == "1":
    pytest.skip("AIRLOCK_SKIP_SERVERS=1: this lane leaves the server scenarios to another", allow_module_level=True)

_missing = [name for name in ("gunicorn", "uvicorn", "gevent") if importlib.util.find_spec(name) is None]
if _missing:
    _reason = f"{', '.join(_missing)} not installed (pip install --group test); the process-model tests need them"
    if IN_CI:
        raise RuntimeError(f"CI=true and {_reason}")
    pytest.skip(_reason, allow_module_level=True)

MODES = ("inline", "background")
QUEUE = "airlock-servers"
REQUESTS = 12
TASKS = 5


@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    require_service("postgres")
    with database() as name:
        yield name


@pytest.fixture(scope="module")
def broker() -> Iterator[OwnRedis]:
    with OwnRedis() as server:
        yield server


@pytest.fixture(scope="module")
def consumer(db: str, broker: OwnRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real Celery worker (solo pool: in order, which the duplicate barrier relies on)."""
    with Processes(tmp_path_factory.mktemp("consumer")) as processes:
        yield processes.worker(environment(db, broker.url, QUEUE, "inline"), QUEUE)


@pytest.fixture
def processes(tmp_path: Path, consumer: Server) -> Iterator[Processes]:
    with Processes(tmp_path) as started:
        yield started


def env(db: str, broker: OwnRedis, mode: str, **outbox: Any) -> dict[str, str]:
    return environment(db, broker.url, QUEUE, mode, AIRLOCK_SERVERS_OUTBOX=json.dumps(outbox))


def urls(server: Server, token: str, path: str = "/order/", count: int = REQUESTS) -> list[str]:
    return [f"{server.url}{path}?token={token}"] * count


def relay_once(processes: Processes, db: str, broker: OwnRedis, token: str) -> str:
    """``airlock_relay --once``, once the rows of ``token`` are due (after their writer's grace)."""
    wait_until_due(db, token)
    done = processes.command(env(db, broker, "inline"), "airlock_relay", "--once")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def assert_each_ran_once(db: str, broker: OwnRedis, token: str, committed: int, *, duplicates_allowed: bool = False):
    """Every committed task delivered; each id ran once; and, unless a kill could duplicate, delivered once."""
    rows = outbox_rows(db, token)
    assert len(rows) == committed, f"{len(rows)} outbox rows for {committed} committed tasks"
    wait_for_deliveries(broker.url, token, set(rows))
    barrier(broker.url, QUEUE)
    delivered = counted(broker.url, delivered_key(token))
    assert set(delivered) == set(rows), "a task id was delivered that no committed row has"
    from tests.servers.keys import ran_key

    ran = counted(broker.url, ran_key(token))
    assert ran == dict.fromkeys(rows, 1)
    twice = {task_id: n for task_id, n in delivered.items() if n > 1}
    if not duplicates_allowed:
        assert not twice, f"delivered more than once: {twice}"
    states = collections.Counter(outbox_rows(db, token).values())
    assert states == {"sent": committed}, states
    return twice


def states(db: str, token: str) -> collections.Counter[str]:
    return collections.Counter(outbox_rows(db, token).values())


def observed(what: str, left: collections.Counter[str]) -> None:
    """What a process left at its exit, for ``pytest -rP`` (docs/reliability.md quotes it)."""
    print(f"{what}: at exit {dict(left)}")


# -- the servers ---------------------------------------------------------------------------

SERVERS = [
    # (server, paths requested, the signal that stops it as its operator would)
    ("gunicorn-sync", ["/order/"], signal.SIGTERM),
    ("gunicorn-gthread", ["/order/"], signal.SIGTERM),
    ("gunicorn-gevent", ["/order/"], signal.SIGTERM),
    ("uvicorn", ["/order/async/", "/order/"], signal.SIGTERM),
    ("runserver", ["/order/"], signal.SIGINT),  # Ctrl-C
    ("runserver", ["/order/"], signal.SIGTERM),  # runserver leaves SIGTERM to Python's default: death
]

# runserver serves each request on a thread of its own, where no signal handler can be
# set; the app's ready() (on the main thread) makes its default SIGTERM drain first. No
# server here leaves anything to the relay at a clean stop.
LEFT_TO_THE_RELAY: set[tuple[str, int, str]] = set()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "paths", "stop"), SERVERS, ids=[f"{k}-{s.name}" for k, _, s in SERVERS])
def test_a_server_delivers_every_committed_task_once_and_leaves_nothing_at_a_clean_exit(
    kind, paths, stop, mode, db, broker, processes
):
    token = new_token()
    server = processes.serve(kind, env(db, broker, mode))
    requests = [url for path in paths for url in urls(server, token, path, REQUESTS // len(paths))]
    assert get_many(requests) == [b"ok"] * len(requests)
    server.signal(stop)
    server.wait()
    left = states(db, token)
    observed(f"{kind} {mode}, {signal.Signals(stop).name} right after the responses", left)
    killed = (kind, stop, mode) in LEFT_TO_THE_RELAY
    if killed:
        assert set(left) <= {"ready", "sent"}, left
        relay_once(processes, db, broker, token)
    else:  # a healthy broker and a clean exit: everything went out from the server itself
        assert left == {"sent": len(requests) * TASKS}, server.log()[-3000:]
    # Killed mid-publish, the rows of messages already written to the broker were not
    # marked sent: the relay sends them again, and the consumer drops the second copy.
    assert_each_ran_once(db, broker, token, len(requests) * TASKS, duplicates_allowed=killed)


@pytest.mark.parametrize("mode", [*MODES, "off"])
def test_a_management_command_sends_its_tasks_before_it_exits(mode, db, broker, processes):
    token = new_token()
    done = processes.command(env(db, broker, mode), "servers_enqueue", token, "--count", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    left = states(db, token)
    observed(f"management command {mode}, normal exit", left)
    if mode == "off":  # everything is the relay's
        assert left == {"ready": 4 * TASKS}
        relay_once(processes, db, broker, token)
    else:
        assert left == {"sent": 4 * TASKS}, done.stderr[-3000:]
    assert_each_ran_once(db, broker, token, 4 * TASKS)


@pytest.mark.skipif("HANDOFF_LIMIT" not in DEFAULTS, reason="the outbox has no background hand-off yet")
def test_a_full_hand_off_queue_publishes_inline_and_still_delivers_each_task_once(db, broker, processes):
    token = new_token()
    server = processes.serve("gunicorn-gthread", env(db, broker, "background", HANDOFF_LIMIT=1))
    assert get_many(urls(server, token, count=24), concurrency=8) == [b"ok"] * 24
    server.signal(signal.SIGTERM)
    server.wait()
    assert states(db, token) == {"sent": 24 * TASKS}, server.log()[-3000:]
    assert_each_ran_once(db, broker, token, 24 * TASKS)


def _wait_for_rows(db: str, token: str, count: int, worker: Server) -> None:
    deadline = time.monotonic() + 30
    while sum(states(db, token).values()) < count:  # every run committed its follow-ups
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.01)


@pytest.mark.parametrize("mode", MODES)
def test_a_celery_task_s_follow_ups_go_out_from_a_prefork_worker_even_when_it_stops_at_once(
    mode, db, broker, processes
):
    from celery import Celery

    token, queue = new_token(), f"{QUEUE}-fanout"
    worker = processes.worker(env(db, broker, mode), queue, pool="prefork", concurrency=2)
    app = Celery("airlock_servers_fanout", broker=broker.url, set_as_current=False)
    app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    try:
        for _ in range(4):
            app.send_task("servers.fanout", args=(token, TASKS), queue=queue)
    finally:
        app.close()
    _wait_for_rows(db, token, 4 * TASKS, worker)
    worker.signal(signal.SIGTERM)  # warm shutdown, at once
    worker.wait()
    left = states(db, token)
    observed(f"celery prefork {mode}, SIGTERM right after the runs", left)
    assert set(left) <= {"ready", "sent"}, left
    relay_once(processes, db, broker, token)  # what the worker did not publish before it exited
    assert_each_ran_once(db, broker, token, 4 * TASKS, duplicates_allowed=mode == "background")


# Dramatiq and Huey: the background publisher only (the worker's own process model); an
# inline run publishes inside the run, as every test of the inline fast path does.
def test_a_dramatiq_actor_s_follow_ups_go_out_from_its_worker_even_when_it_stops_at_once(db, broker, processes):
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    mode, token = "background", new_token()
    worker = processes.dramatiq_worker(env(db, broker, mode))
    sender = RedisBroker(url=broker.url, namespace="airlock-servers-dramatiq")
    try:
        sender.declare_queue("default")
        for _ in range(4):
            message = dramatiq.Message(
                queue_name="default", actor_name="servers.dramatiq_fanout", args=(token, TASKS), kwargs={}, options={}
            )
            sender.enqueue(message)
    finally:
        sender.close()
    # The worker process stops its threads and exits normally.
    _stop_right_after_the_runs(worker, f"dramatiq {mode}", db, broker, processes, token)


def test_a_huey_task_s_follow_ups_go_out_from_its_consumer_even_when_it_stops_at_once(db, broker, processes):
    from huey import RedisHuey

    mode, token = "background", new_token()
    consumer = processes.huey_consumer(env(db, broker, mode))
    sender = RedisHuey("airlock-servers-huey", url=broker.url)

    def fanout(token: str, count: int) -> None:
        raise AssertionError("runs in the consumer, never here")

    fanout.__module__ = "tests.servers.huey_app"  # the consumer's registry name: tests.servers.huey_app.fanout
    send = sender.task(name="fanout")(fanout)
    for _ in range(4):
        send(token, TASKS)
    # Huey's immediate shutdown; the interpreter then exits normally.
    _stop_right_after_the_runs(consumer, f"huey {mode}", db, broker, processes, token)


def _stop_right_after_the_runs(worker: Server, what: str, db: str, broker: OwnRedis, processes: Processes, token: str):
    """SIGTERM once four runs committed their follow-ups: the drain at exit sends every one, each run once."""
    _wait_for_rows(db, token, 4 * TASKS, worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()[-3000:]
    left = states(db, token)
    observed(f"{what}, SIGTERM right after the runs", left)
    assert left == {"sent": 4 * TASKS}, worker.log()[-3000:]
    relay_once(processes, db, broker, token)
    assert_each_ran_once(db, broker, token, 4 * TASKS)


PRELOAD = [
    pytest.param("inline", "idle"),
    pytest.param("background", "idle"),
    ("background", "busy"),  # a fork waits for the master's publisher to finish its run
]


@pytest.mark.parametrize(("mode", "master"), PRELOAD)
def test_preload_forks_workers_that_each_publish_with_a_publisher_of_their_own(mode, master, db, broker, processes):
    token = new_token()
    server = processes.serve(
        "gunicorn-sync", {**env(db, broker, mode, DRAIN_TIMEOUT=1.0), "AIRLOCK_SERVERS_WARM": master}, workers=2,
        preload=True,
    )  # fmt: skip
    answers = [json.loads(body) for body in get_many(urls(server, token, "/publisher/", 24), concurrency=6)]
    by_pid = {answer["pid"]: answer for answer in answers}
    assert len(by_pid) == 2, f"both workers should have answered: {sorted(by_pid)}"
    assert server.process.pid not in by_pid
    publishers = collections.defaultdict(set)
    for answer in answers:  # a worker's first answer may come before its first hand-off
        if answer["publisher"] is not None:
            publishers[answer["pid"]].add(json.dumps(answer["publisher"], sort_keys=True))
    if mode == "background":
        # Each worker has one live publisher thread of its own, started after the fork (the
        # master started one at import, before it forked: a child never uses that one).
        assert sorted(publishers) == sorted(by_pid), publishers
        found = {pid: [json.loads(p) for p in seen] for pid, seen in publishers.items()}
        assert all(len(seen) == 1 for seen in found.values()), found
        assert all(seen[0]["pid"] == pid and seen[0]["alive"] for pid, seen in found.items()), found
        threads = {seen[0]["thread"] for seen in found.values()}
        assert len(threads) == 2, f"two workers share a publisher thread: {found}"
    else:
        assert not publishers, "inline: no publisher thread"
    server.signal(signal.SIGTERM)
    server.wait()
    assert states(db, token) == {"sent": len(answers) * TASKS}, server.log()[-3000:]
    assert_each_ran_once(db, broker, token, len(answers) * TASKS)
    # The master's own hand-off, before it forked, went out too.
    assert "sent" in states(db, "warm-up")


# -- signals and kills -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["master", "workers"])
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_while_the_broker_hangs_leaves_what_the_server_held_for_the_relay(mode, target, db, broker, processes):
    token = new_token()
    drain = {"DRAIN_TIMEOUT": 1.0} if "DRAIN_TIMEOUT" in DEFAULTS else {}
    hung = {**env(db, broker, mode, FAST_PATH_DEADLINE=0.5, **drain), "AIRLOCK_SERVERS_SOCKET_TIMEOUT": "0.5"}
    server = processes.serve("gunicorn-sync", hung)
    broker.freeze()
    try:
        assert get_many(urls(server, token, count=6)) == [b"ok"] * 6
        if target == "workers":  # gunicorn replaces each one; the old ones exit as at any SIGTERM
            workers = server.children()
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            wait_gone(workers)
        server.signal(signal.SIGTERM)
        server.wait()
    finally:
        broker.thaw()
    left = states(db, token)
    observed(f"gunicorn sync {mode}, broker hung, SIGTERM to the {target}", left)
    assert sum(left.values()) == 6 * TASKS
    assert set(left) <= {"ready", "sent"}, left
    relay_once(processes, db, broker, token)
    # Writes sent into the frozen broker's socket before the exit reach it once it
    # thaws, unacknowledged: the relay sends those rows again, and the consumer drops them.
    twice = assert_each_ran_once(db, broker, token, 6 * TASKS, duplicates_allowed=True)
    print(f"gunicorn sync {mode}, hung broker, SIGTERM to the {target}: {len(twice)} delivered twice, dropped")


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() and "State:\tZ" not in _status(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{pids} did not exit"
        time.sleep(0.05)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "State:\tZ"


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_of_the_workers_right_after_their_responses_loses_nothing(mode, db, broker, processes):
    token = new_token()
    server = processes.serve("gunicorn-sync", env(db, broker, mode), workers=2)
    assert get_many(urls(server, token, count=16)) == [b"ok"] * 16
    workers = server.children()
    assert len(workers) == 2, workers
    server.kill()  # SIGKILL to the master and both workers at once
    left = states(db, token)
    observed(f"gunicorn sync {mode}, SIGKILL right after the responses", left)
    assert sum(left.values()) == 16 * TASKS
    relay_once(processes, db, broker, token)
    twice = assert_each_ran_once(db, broker, token, 16 * TASKS, duplicates_allowed=True)
    print(f"gunicorn sync {mode}, SIGKILL: {len(twice)} delivered twice, dropped by the consumer")
