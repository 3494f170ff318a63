"""How soon the relay delivers the rows of a writer killed after its commit, before its scope decided.

``python -m bench writer_recovery``. Per database (PostgreSQL, SQLite, MariaDB;
each skipped if unreachable), on a database of the bench's own: a relay process
runs ``Relay().run()`` with the default options (``POLL`` 1 s). Twenty times, a
writer process commits one intent inside a scope and waits before the scope
decides, as a request does between its view's commit and its response; it is
SIGKILLed a random 0-2 s after the commit (a request killed at once, or after
more work). The figure is the time from the SIGKILL to the row no longer being
``pending`` (the relay made it ``ready``, then sent it), read by polling the row
every 10 ms.

The issue's goal: p99 within 10 s at default settings. Expected: under 2 s (the
relay leaves a pending row alone for its first second, then finds it on its
next poll).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench._harness import Figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLS = 20


def _settings(vendor: str, name: str) -> dict[str, Any]:
    if vendor == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
    if vendor == "mariadb":
        import pymysql

        pymysql.version_info = (2, 2, 1, "final", 0)  # Django checks mysqlclient's version
        pymysql.install_as_MySQLdb()
        return {"ENGINE": "django.db.backends.mysql", "HOST": "127.0.0.1", "PORT": "3306", "USER": "root", "NAME": name}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": name,
    }


def _django(vendor: str, name: str) -> Any:
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": _settings(vendor, name)},
        INSTALLED_APPS=["airlock.integrations.django"],
        USE_TZ=True,
        AIRLOCK={"OUTBOX": {"FAST_PATH": False}},  # everything else at its default: POLL 1 s
    )
    django.setup()
    from tests.outbox_support import make_app

    return make_app("outbox_bench_recovery", "memory://")


def _writer(vendor: str, name: str) -> None:
    """Commit one intent in a scope that then waits (on stdin) before it decides."""
    app, record = _django(vendor, name)
    from django.db import transaction

    import airlock
    from airlock.integrations.django.outbox import OutboxMessage, OutboxScope
    from airlock.integrations.executors.celery import celery_executor

    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    airlock.scope().enter()
    sys.stdin.readline()  # "go": spawned ahead of its turn, it commits when told
    with transaction.atomic():
        airlock.enqueue(record, "undecided")
    intent_id = OutboxMessage.objects.order_by("-id").values_list("intent_id", flat=True).first()
    print(f"committed {intent_id}", flush=True)
    sys.stdin.readline()  # SIGKILLed here
    del app


def _relay(vendor: str, name: str) -> None:
    app = _django(vendor, name)
    from airlock.integrations.django.outbox import Relay

    relay = Relay(databases=["default"])
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    print("serving", flush=True)
    relay.run()
    del app


def _spawn(role: str, vendor: str, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.bench_writer_recovery", role, vendor, name],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _one(writer: subprocess.Popen[str], pending: Any) -> float:
    """Let ``writer`` commit, kill it 0-2 s later; seconds from the kill until its row is not pending."""
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()
    line = writer.stdout.readline().split()
    if len(line) != 2:
        raise RuntimeError(f"the writer printed {line!r} (exit {writer.wait()})")
    intent_id = line[1]
    time.sleep(random.uniform(0, 2))
    killed = time.time()
    writer.send_signal(signal.SIGKILL)
    while pending(intent_id):
        if time.time() - killed > 60:
            raise AssertionError(f"row {intent_id} still pending 60 s after its writer was killed")
        time.sleep(0.01)
    took = time.time() - killed
    writer.wait()
    writer.stdin.close()
    writer.stdout.close()
    return took


def _measure(vendor: str, name: str) -> list[float]:
    _django(vendor, name)
    from django.core.management import call_command

    from airlock.integrations.django.outbox import OutboxMessage

    call_command("migrate", verbosity=0)

    def pending(intent_id: str) -> bool:
        return bool(OutboxMessage.objects.filter(intent_id=intent_id, state="pending").exists())

    relay = _spawn("relay", vendor, name)
    assert relay.stdout is not None and relay.stdout.readline().strip() == "serving"
    times: list[float] = []
    upcoming: subprocess.Popen[str] | None = _spawn("writer", vendor, name)
    try:
        for number in range(KILLS):
            assert upcoming is not None
            writer, upcoming = upcoming, (_spawn("writer", vendor, name) if number + 1 < KILLS else None)
            times.append(_one(writer, pending))
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.communicate(timeout=30)
        if upcoming is not None:
            upcoming.kill()
            upcoming.communicate()
    return times


def _database(vendor: str) -> tuple[str, Any]:
    """A database of the bench's own: its name, and what drops it."""
    name = f"airlock_bench_recovery_{os.getpid()}"
    if vendor == "sqlite":
        return os.path.join(tempfile.mkdtemp(prefix="airlock-bench-recovery-"), "db.sqlite3"), lambda: None
    if vendor == "mariadb":
        import pymysql

        def mariadb(statement: str) -> None:
            with pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=2) as connection:
                connection.cursor().execute(statement)

        mariadb(f"CREATE DATABASE {name}")
        return name, lambda: mariadb(f"DROP DATABASE IF EXISTS {name}")
    import psycopg

    admin = "host={} port={} user={} dbname=postgres connect_timeout=2".format(
        os.environ.get("PGHOST", "127.0.0.1"), os.environ.get("PGPORT", "5432"), os.environ.get("PGUSER", "postgres")
    )

    def postgres(statement: str) -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(statement)

    postgres(f"CREATE DATABASE {name}")
    return name, lambda: postgres(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * share)) - 1]


def run(quick: bool = False) -> list[Figure]:
    figures = []
    for vendor in ("postgresql", "sqlite", "mariadb"):
        try:
            name, drop = _database(vendor)
        except Exception as error:
            print(f"  {vendor}: skipped ({type(error).__name__}: {error})")
            continue
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.bench_writer_recovery", "measure", vendor, name],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"{vendor}: {done.stderr[-3000:]}")
            times = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            drop()
        p50, p99 = _percentile(times, 0.5), _percentile(times, 0.99)
        figures.append(
            Figure(
                f"{vendor}: SIGKILL after the commit -> row ready, p99 of {len(times)}",
                p99,
                "<= 10 s",
                p99 <= 10.0,
                f"p50 {p50:.2f} s, min {min(times):.2f} s, max {max(times):.2f} s; relay POLL 1 s",
                unit=" s",
            )
        )
    return figures


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    role, vendor, name = sys.argv[1:4]
    if role == "measure":
        print(json.dumps(_measure(vendor, name)))
    elif role == "writer":
        _writer(vendor, name)
    else:
        _relay(vendor, name)
