"""What the durable outbox costs, each figure a ratio against a baseline measured in the same run.

On a PostgreSQL database of the bench's own and a redis-server the bench starts
on a free port (never the shared one):

- relay throughput: 10,000 ready rows published by one relay, against the same
  10,000 messages sent directly (``apply_async`` over one borrowed producer, no
  database); and msg/s
  with four relay processes at once (timed from a common start, after start-up);
- inside the request: the outbox's cost per intent (enqueue + row + flush, in
  ``atomic()``), against ``Model.objects.create()`` of a row of the same size;
- after the commit: from the commit to the fifth message published, for five
  intents, against a plain ``DjangoScope`` with the Celery executor; once with the
  scope around ``atomic()`` (it decides after the commit, so the outbox first marks
  its rows ready: one more database round trip) and once inside it.

It configures Django, so it measures in child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from bench._harness import Figure

DB = "airlock_bench_outbox"
QUEUE = "airlock-bench-outbox"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _django(database: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": os.environ.get("PGHOST", "127.0.0.1"),
                "PORT": os.environ.get("PGPORT", "5432"),
                "USER": os.environ.get("PGUSER", "postgres"),
                "NAME": database,
            }
        },
        INSTALLED_APPS=["airlock.integrations.django"],
        USE_TZ=True,
        AIRLOCK={"OUTBOX": {"FAST_PATH": False}},
    )
    django.setup()


def _app(url: str) -> Any:
    from tests.outbox_support import make_app

    return make_app("outbox_bench", url, QUEUE)


def _fill(record: Any, count: int) -> None:
    import airlock
    from airlock.integrations.django.outbox import OutboxScope
    from airlock.integrations.executors.celery import celery_executor

    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    for start in range(0, count, 1000):
        with airlock.scope():
            for number in range(start, min(count, start + 1000)):
                airlock.enqueue(record, number, key="v")


def _measure(url: str, database: str, quick: bool) -> dict[str, float]:
    _django(database)
    from django.core.management import call_command
    from django.db import connection, transaction

    import airlock
    from airlock.integrations.django import DjangoScope
    from airlock.integrations.django.outbox import OutboxMessage, OutboxScope, Relay, configure_outbox
    from airlock.integrations.executors.celery import celery_executor

    call_command("migrate", verbosity=0)
    app, record = _app(url)
    count = 2_000 if quick else 10_000
    flush = _redis_flush(url)

    # Relay throughput against direct dispatch of the same messages, best of 3 turns each.
    relay_times, direct_times = [], []
    for _ in range(1 if quick else 3):
        OutboxMessage.objects.all().delete()
        _fill(record, count)
        flush()
        started = time.perf_counter()
        done = Relay(databases=["default"], batch_size=500).run_once()
        relay_times.append(time.perf_counter() - started)
        assert done.sent == count, done
        flush()
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:  # Celery's fastest: one producer for all
            for number in range(count):
                record.apply_async((number,), {"key": "v"}, retry=False, producer=producer)
        direct_times.append(time.perf_counter() - started)
    flush()

    # Inside the request: per intent, in one atomic() of 100.
    configure_outbox({"FAST_PATH": False})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    payload = json.dumps([[1], {"key": "v"}, {}])

    def outbox_block() -> None:
        with airlock.scope(), transaction.atomic():
            for number in range(100):
                airlock.enqueue(record, number, key="v")

    def create_block() -> None:
        with transaction.atomic():
            for number in range(100):
                OutboxMessage.objects.create(
                    intent_id=f"{number:032x}", task=record.name, executor="celery", payload=payload,
                    state="ready", created_at=0.0, available_at=0.0, written_by="bench-0001",
                )  # fmt: skip

    def reset() -> None:
        OutboxMessage.objects.all().delete()

    inside: dict[str, float] = {"outbox": float("inf"), "create": float("inf")}
    for _ in range(3 if quick else 9):
        for name, block in (("outbox", outbox_block), ("create", create_block)):
            reset()
            started = time.perf_counter()
            block()
            inside[name] = min(inside[name], (time.perf_counter() - started) / 100)

    # After the commit: commit -> fifth message published, five intents; the outbox
    # publishing inline (before the scope returns) and from its background publisher.
    import threading

    from celery.signals import after_task_publish

    stamps: list[float] = []
    fifth = threading.Event()

    def stamp(**_: Any) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == 5:
            fifth.set()

    after_task_publish.connect(stamp, weak=False)

    def published() -> float:
        assert fifth.wait(10), stamps
        return stamps[-1]

    # Each transaction commits a row of its own, as a request does (a commit that wrote
    # nothing costs no WAL flush, and would flatter the baseline).
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_order (id serial PRIMARY KEY, sku text NOT NULL)")

    def order() -> None:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_order (sku) VALUES (%s)", ["tea"])

    def latency(cls: type) -> float:
        stamps.clear()
        fifth.clear()
        with airlock.scope(_cls=cls, executor=celery_executor):
            with transaction.atomic():
                order()
                for number in range(5):
                    airlock.enqueue(record, number, key="v")
                committing = time.perf_counter()
        return published() - committing

    def latency_inside(cls: type) -> float:
        # The scope inside the transaction: it decides before the commit.
        stamps.clear()
        fifth.clear()
        with transaction.atomic():
            order()
            with airlock.scope(_cls=cls, executor=celery_executor):
                for number in range(5):
                    airlock.enqueue(record, number, key="v")
            committing = time.perf_counter()
        return published() - committing

    names = ("outbox", "background", "django", "outbox_inside", "background_inside", "django_inside")
    after: dict[str, float] = dict.fromkeys(names, float("inf"))
    modes = (("outbox", OutboxScope, "inline"), ("background", OutboxScope, "background"), ("django", DjangoScope, ""))
    for _ in range(15 if quick else 60):
        for name, cls, fast_path in modes:
            configure_outbox({"FAST_PATH": fast_path or "inline"})
            after[name] = min(after[name], latency(cls))
            after[f"{name}_inside"] = min(after[f"{name}_inside"], latency_inside(cls))
    flush()
    connection.close()
    app.pool.force_close_all()
    return {
        "relay": min(relay_times) / count,
        "direct": min(direct_times) / count,
        "count": count,
        "inside_outbox": inside["outbox"],
        "inside_create": inside["create"],
        "after_outbox": after["outbox"],
        "after_django": after["django"],
        "inside_after_outbox": after["outbox_inside"],
        "inside_after_django": after["django_inside"],
        "after_background": after["background"],
        "inside_after_background": after["background_inside"],
    }


def _redis_flush(url: str) -> Any:
    import redis

    def flush() -> None:
        client = redis.Redis.from_url(url)
        client.delete(QUEUE)
        client.close()

    return flush


def _relay_child(url: str, database: str) -> None:
    """One of four relays: set up, wait for the go line on stdin, drain, print start and end."""
    _django(database)
    app, _ = _app(url)
    from airlock.integrations.django.outbox import Relay

    relay = Relay(databases=["default"], batch_size=500)
    relay.run_once()  # nothing due yet (the parent fills the table after "ready"): warms the connections
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    done = relay.run_once()
    print(json.dumps({"start": started, "end": time.time(), "sent": done.sent}), flush=True)
    del app


def _four_relays(url: str, database: str, quick: bool) -> dict[str, float]:
    _django(database)
    from airlock.integrations.django.outbox import OutboxMessage

    _, record = _app(url)
    count = 4_000 if quick else 10_000
    OutboxMessage.objects.all().delete()
    _redis_flush(url)()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.bench_outbox", "relay", url, database],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    _fill(record, count)  # after the relays warmed up on an empty table
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [json.loads(child.communicate(timeout=300)[0]) for child in children]
    sent = sum(result["sent"] for result in results)
    assert sent == count, results
    took = max(result["end"] for result in results) - min(result["start"] for result in results)
    _redis_flush(url)()
    return {"four": count / took, "shares": [result["sent"] for result in results]}  # type: ignore[dict-item]


def _child(*arguments: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_outbox", *arguments], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"bench.bench_outbox {arguments[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Figure]:
    sys.path.insert(0, ROOT)
    import psycopg
    from tests.own_redis import own_redis

    database = f"{DB}_{os.getpid()}"
    admin = "host={} port={} user={} dbname=postgres".format(
        os.environ.get("PGHOST", "127.0.0.1"), os.environ.get("PGPORT", "5432"), os.environ.get("PGUSER", "postgres")
    )
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    try:
        with own_redis() as server:
            mode = "quick" if quick else "full"
            t = _child("measure", server.url, database, mode)
            f = _child("four", server.url, database, mode)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    relay_rate, direct_rate = 1 / t["relay"], 1 / t["direct"]
    return [
        Figure(f"relay throughput vs direct dispatch, {t['count']:.0f} msgs to Redis", relay_rate / direct_rate,
               ">= 0.8x", relay_rate / direct_rate >= 0.8,
               f"{relay_rate:.0f} vs {direct_rate:.0f} msg/s; 4 relays {f['four']:.0f} msg/s, shares {f['shares']}"),
        Figure("outbox cost per intent in atomic() vs Model.objects.create()", t["inside_outbox"] / t["inside_create"],
               "<= 1.2x", t["inside_outbox"] / t["inside_create"] <= 1.2,
               f"{t['inside_outbox'] * 1e6:.0f} vs {t['inside_create'] * 1e6:.0f} us per intent"),
        Figure("commit to 5th publish, OutboxScope inline vs DjangoScope", t["after_outbox"] / t["after_django"],
               "<= 1.2x", t["after_outbox"] / t["after_django"] <= 1.2,
               f"{t['after_outbox'] * 1e6:.0f} vs {t['after_django'] * 1e6:.0f} us (scope around atomic)"),
        Figure("the same, scope inside atomic()", t["inside_after_outbox"] / t["inside_after_django"],
               "<= 1.2x", t["inside_after_outbox"] / t["inside_after_django"] <= 1.2,
               f"{t['inside_after_outbox'] * 1e6:.0f} vs {t['inside_after_django'] * 1e6:.0f} us"),
        Figure("commit to 5th publish, background publisher vs DjangoScope",
               t["after_background"] / t["after_django"], "<= 1.2x", t["after_background"] / t["after_django"] <= 1.2,
               f"{t['after_background'] * 1e6:.0f} vs {t['after_django'] * 1e6:.0f} us (scope around atomic)"),
        Figure("the same, scope inside atomic()", t["inside_after_background"] / t["inside_after_django"],
               "<= 1.2x", t["inside_after_background"] / t["inside_after_django"] <= 1.2,
               f"{t['inside_after_background'] * 1e6:.0f} vs {t['inside_after_django'] * 1e6:.0f} us"),
    ]  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    command = sys.argv[1]
    if command == "measure":
        print(json.dumps(_measure(sys.argv[2], sys.argv[3], sys.argv[4] == "quick")))
    elif command == "four":
        print(json.dumps(_four_relays(sys.argv[2], sys.argv[3], sys.argv[4] == "quick")))
    else:
        _relay_child(sys.argv[2], sys.argv[3])
