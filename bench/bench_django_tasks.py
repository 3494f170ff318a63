"""Django Tasks (Django 6): ``django_tasks_executor`` and ``AirlockBackend`` on django-tasks-db.

Figures, each against a baseline timed in the same run, on PostgreSQL:
- flush 1,000 intents through ``django_tasks_executor`` into the ``DatabaseBackend``,
  against 1,000 direct ``task.enqueue()`` calls                            goal <= 1.05x
- a request (``AirlockMiddleware``, a ``DjangoScope``) whose view calls ``.enqueue()``
  five times on a task bound to an ``AirlockBackend`` (held, sent after the
  response), against the same request with the task on the bare backend      goal <= 1.1x
- the same on ``DummyBackend`` (a list in memory), which leaves airlock's own
  work and Django's as the baseline                                          no goal: airlock's share

Each ``enqueue()`` on the ``DatabaseBackend`` inserts (and commits) one row, so the
database round trip dominates both sides. No worker runs: the table is emptied
before every round. The benchmark makes a PostgreSQL database of its own
(``AIRLOCK_BENCH_PG``, default ``127.0.0.1:5432`` as ``postgres``), migrates
django-tasks-db into it and drops it afterwards; it measures in a child process,
since it configures Django. Django 6 needs Python 3.12: on older Pythons it is skipped.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

from bench._harness import Figure, best_of, best_of_each

N = 1_000
REQUEST_ENQUEUES = 5
DATABASE = f"airlock_bench_django_tasks_{os.getpid()}"
HOST, _, PORT = os.environ.get("AIRLOCK_BENCH_PG", "127.0.0.1:5432").partition(":")


def send_email(order_id: int, *, force: bool = False) -> None:
    """Never runs here: only its rows are timed."""


def _server(statement: str) -> None:
    import psycopg

    with psycopg.connect(host=HOST, port=PORT or "5432", user="postgres", dbname="postgres", autocommit=True) as db:
        db.execute(statement)


def _set_up() -> None:
    import django
    from django.conf import settings

    _server(f'CREATE DATABASE "{DATABASE}"')
    backend = {"BACKEND": "django_tasks_db.DatabaseBackend"}
    dummy = {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": HOST,
                "PORT": PORT or "5432",
                "USER": "postgres",
                "NAME": DATABASE,
                # Each enqueue commits one row; without waiting for the disk on every
                # commit the timings measure the round trips, not this machine's fsync.
                "OPTIONS": {"options": "-c synchronous_commit=off"},
            }
        },
        INSTALLED_APPS=["django_tasks_db", "airlock.integrations.django"],
        TASKS={
            "default": backend,
            "wrapped": {"BACKEND": "airlock.integrations.django_tasks.AirlockBackend", "OPTIONS": {"WRAPS": backend}},
            "dummy": dummy,
            "dummy_wrapped": {
                "BACKEND": "airlock.integrations.django_tasks.AirlockBackend",
                "OPTIONS": {"WRAPS": dummy},
            },
        },
        AIRLOCK={"EXECUTOR": "airlock.integrations.executors.django_tasks.django_tasks_executor"},
        SECRET_KEY="airlock-bench-only",
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "django_tasks_database", verbosity=0)


def _tear_down() -> None:
    from django.db import connections

    connections.close_all()
    _server(f'DROP DATABASE IF EXISTS "{DATABASE}"')


def _measure(repeat: int) -> dict[str, float]:
    from django.db import connection
    from django.http import HttpResponse
    from django.tasks import task, task_backends
    from django.test import RequestFactory
    from django_tasks_db.models import DBTaskResult

    import airlock
    from airlock.integrations.django import AirlockMiddleware
    from airlock.integrations.executors.django_tasks import django_tasks_executor

    # What @task does at import (Django must be set up first): the module's name
    # now holds the Task, which is where the backend looks it up by its path.
    bare = task(send_email)
    globals()["send_email"] = bare
    wrapped = bare.using(backend="wrapped")

    def direct() -> None:
        enqueue = bare.enqueue
        for i in range(N):
            enqueue(i, force=True)

    def through_airlock() -> None:
        enqueue = airlock.enqueue
        with airlock.scope(executor=django_tasks_executor):
            for i in range(N):
                enqueue(bare, i, force=True)

    def view_of(which: object) -> Callable[[object], HttpResponse]:
        def view(request: object) -> HttpResponse:
            for i in range(REQUEST_ENQUEUES):
                which.enqueue(i, force=True)  # type: ignore[attr-defined]
            return HttpResponse()

        return view

    def purge() -> None:
        # TRUNCATE, not DELETE: no dead rows left behind to slow the next round's inserts.
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {DBTaskResult._meta.db_table}")

    request = RequestFactory().post("/orders")
    without = AirlockMiddleware(view_of(bare))
    with_wrapper = AirlockMiddleware(view_of(wrapped))
    requests = 10

    def requests_without() -> None:
        for _ in range(requests):
            without(request)

    def requests_with() -> None:
        for _ in range(requests):
            with_wrapper(request)

    for warm in (direct, through_airlock, requests_without, requests_with):
        warm()
        purge()
    # Emptying the table is part of every round (untimed: best_of's setup).
    # The database is shared and its speed drifts over seconds, more than what airlock
    # adds: time the two sides in pairs, back to back (in turns, which goes first), and
    # take the median of the pairs' ratios. The fastest time of each side is the detail.
    flush = _paired(direct, through_airlock, rounds=repeat * 2, setup=purge)
    request_times = _paired(requests_without, requests_with, rounds=repeat * 8, setup=purge)
    dummy_bare, dummy_wrapped = bare.using(backend="dummy"), bare.using(backend="dummy_wrapped")
    dummy_without = AirlockMiddleware(view_of(dummy_bare))
    dummy_with = AirlockMiddleware(view_of(dummy_wrapped))

    def clear() -> None:
        for alias in ("dummy", "dummy_wrapped"):
            task_backends[alias].clear()

    dummy_times = best_of_each(
        {"without": lambda: dummy_without(request), "with": lambda: dummy_with(request)},
        repeat=repeat * 200,
        setup=clear,
    )
    purge()
    return {
        "flush_ratio": flush[0],
        "direct": flush[1] / N,
        "executor": flush[2] / N,
        "request_ratio": request_times[0],
        "without": request_times[1] / requests,
        "with": request_times[2] / requests,
        "dummy_without": dummy_times["without"],
        "dummy_with": dummy_times["with"],
    }


def _paired(
    baseline: Callable[[], None], contender: Callable[[], None], *, rounds: int, setup: Callable[[], None]
) -> tuple[float, float, float]:
    """The median ratio contender/baseline over ``rounds`` back-to-back pairs, and each side's best time."""
    ratios, best = [], [float("inf"), float("inf")]
    for n in range(rounds):
        order = (0, 1) if n % 2 == 0 else (1, 0)
        times = [0.0, 0.0]
        for side in order:
            times[side] = best_of((baseline, contender)[side], repeat=1, setup=setup)
            best[side] = min(best[side], times[side])
        ratios.append(times[1] / times[0])
    return statistics.median(ratios), best[0], best[1]


def run(quick: bool = False) -> list[Figure]:
    if sys.version_info < (3, 12):
        print("  skipped: django.tasks needs Django 6, which needs Python 3.12+")
        return []
    repeat = 2 if quick else 5
    child = subprocess.run(
        [sys.executable, "-c", f"from bench.bench_django_tasks import main; main({repeat})"],
        capture_output=True,
        text=True,
    )
    if child.returncode:
        raise RuntimeError(f"the measuring process failed:\n{child.stderr[-2000:]}")
    t = json.loads(child.stdout)
    us = 1e6
    return [
        Figure(
            "django_tasks: flush 1,000 intents via django_tasks_executor vs 1,000 .enqueue()",
            t["flush_ratio"],
            "<= 1.05x",
            t["flush_ratio"] <= 1.05,
            f"median of paired rounds; best {t['executor'] * us:.0f} vs {t['direct'] * us:.0f} us/task (PostgreSQL)",
        ),
        Figure(
            "django_tasks: request with 5 .enqueue() via AirlockBackend vs bare backend",
            t["request_ratio"],
            "<= 1.1x",
            t["request_ratio"] <= 1.1,
            f"median of paired rounds; best {t['with'] * us:.0f} vs {t['without'] * us:.0f} us/request",
        ),
        Figure(
            "django_tasks: the same request on DummyBackend (no database)",
            t["dummy_with"] / t["dummy_without"],
            "-",
            None,
            f"{t['dummy_with'] * us:.0f} vs {t['dummy_without'] * us:.0f} us/request: airlock's own share",
        ),
    ]


def main(repeat: int) -> None:
    """The measuring process: print the timings as JSON."""
    _set_up()
    try:
        print(json.dumps(_measure(repeat)))
    finally:
        _tear_down()
