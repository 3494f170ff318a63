"""Queueing through ``django_q_executor`` against plain ``async_task``, on the ORM broker.

Figures, each against 1,000 plain ``async_task`` calls timed in the same run:
- flush 1,000 intents through ``django_q_executor``, ORM broker         goal <= 1.05x
- the same with an in-memory broker (no database), which leaves only
  django-q2's own packaging (pickle, sign) as the baseline               no goal: airlock's share

Each ``async_task`` on the ORM broker signs a pickled package and inserts (and
commits) one ``OrmQ`` row, so the database round trip dominates both sides. No
worker runs: the queue table is emptied before every round. The benchmark makes a PostgreSQL database of its own
(``AIRLOCK_BENCH_PG``, default ``127.0.0.1:5432`` as ``postgres``), migrates
django-q2 into it and drops it afterwards. It configures Django itself, so run it
in a process of its own: ``python -m bench django_q``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import django
from django.conf import settings

import airlock
from bench._harness import Figure, best_of

N = 1_000
DATABASE = f"airlock_bench_django_q_{os.getpid()}"
HOST, _, PORT = os.environ.get("AIRLOCK_BENCH_PG", "127.0.0.1:5432").partition(":")


def send_email(order_id: int, *, force: bool = False) -> None:
    """Never runs here: only its packages are timed."""


def _server(statement: str) -> None:
    import psycopg

    with psycopg.connect(host=HOST, port=PORT or "5432", user="postgres", dbname="postgres", autocommit=True) as db:
        db.execute(statement)


def _set_up() -> None:
    if settings.configured:
        raise RuntimeError("Django is already configured in this process; run `python -m bench django_q` alone")
    _server(f'CREATE DATABASE "{DATABASE}"')
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": HOST,
                "PORT": PORT or "5432",
                "USER": "postgres",
                "NAME": DATABASE,
            }
        },
        INSTALLED_APPS=["django_q"],
        Q_CLUSTER={"name": "airlock-bench", "orm": "default", "log_level": "WARNING", "timeout": 30, "retry": 60},
        SECRET_KEY="airlock-bench-only",
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", "django_q", verbosity=0)


def _tear_down() -> None:
    from django.db import connections

    connections.close_all()
    _server(f'DROP DATABASE IF EXISTS "{DATABASE}"')


def run(quick: bool) -> list[Figure]:
    _set_up()
    try:
        return _measure(repeat=1 if quick else 2)
    finally:
        _tear_down()


def _measure(repeat: int) -> list[Figure]:
    from django_q.brokers import Broker
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from airlock.integrations.executors.django_q import django_q_executor

    class MemoryBroker(Broker):  # type: ignore[misc]
        """Keeps packages in a list: what is left is django-q2's and airlock's CPU time."""

        def get_connection(self, list_key: str | None = None) -> list[str]:
            return []

        def enqueue(self, task: str) -> int:
            self.connection.append(task)
            return len(self.connection)

    def contenders(**options: object) -> tuple[Callable[[], None], Callable[[], None]]:
        def plain() -> None:
            for i in range(N):
                async_task(send_email, i, force=True, **options)

        def through_airlock() -> None:
            enqueue = airlock.enqueue
            with airlock.scope(executor=django_q_executor):
                for i in range(N):
                    enqueue(send_email, i, force=True, _dispatch_options=options or None)

        return plain, through_airlock

    def compare(
        plain: Callable[[], None], through_airlock: Callable[[], None], purge: Callable[[], None], repeat: int
    ) -> tuple[float, float]:
        def timed(fn: Callable[[], None]) -> float:
            def round_() -> None:
                purge()
                fn()

            # Emptying the queue is part of every round; time it alone and take it off.
            return best_of(round_, repeat=repeat) - best_of(purge, repeat=repeat)

        plain()  # warm the connection, the signer and the pickler
        through_airlock()
        # Interleave the contenders so a noisy neighbour hurts them alike.
        baseline = executor = float("inf")
        for _ in range(2):
            baseline = min(baseline, timed(plain))
            executor = min(executor, timed(through_airlock))
        purge()
        return baseline, executor

    def purge_table() -> None:
        OrmQ.objects.all().delete()

    memory = MemoryBroker("airlock-bench")
    orm = compare(*contenders(), purge_table, repeat)
    in_memory = compare(*contenders(broker=memory), memory.connection.clear, repeat * 5)
    per = 1e6 / N
    return [
        Figure(
            "django_q: flush 1,000 intents via django_q_executor vs 1,000 async_task",
            orm[1] / orm[0],
            "<= 1.05x",
            orm[1] / orm[0] <= 1.05,
            f"{orm[1] * per:.0f} vs {orm[0] * per:.0f} us/task (ORM broker, PostgreSQL)",
        ),
        Figure(
            "django_q: the same with an in-memory broker (packaging only)",
            in_memory[1] / in_memory[0],
            "-",
            None,
            f"{in_memory[1] * per:.0f} vs {in_memory[0] * per:.0f} us/task",
        ),
    ]
