"""Does a ``DjangoScope`` commit stay linear in the number of intents?

One transaction holds N intents of one ``DjangoScope`` (sync executor, a no-op
task), the scope flushes inside it, and the commit is timed: that is when
Django runs the ``on_commit`` callbacks and the intents go out. Goal: at 1M
intents the commit takes at most 1.5x ten times what it takes at 100k. The
figure is that ratio; the absolute times are printed for context.

SQLite in memory always; PostgreSQL too when one answers on 127.0.0.1:5432
(database ``test``, trust auth), each in a child process of its own since each
configures Django. ``--quick`` stops at 400k (its ratio is against 4x 100k).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from bench._harness import Figure, best_of

SIZES = (100_000, 200_000, 400_000, 1_000_000)
QUICK_SIZES = SIZES[:3]


def task(i: int) -> None:
    pass


_DATABASES = {
    "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "postgresql": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": "postgres",
        "NAME": "test",
    },
}


def _measure(engine: str, sizes: tuple[int, ...], repeat: int) -> dict[int, float]:
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": _DATABASES[engine]}, INSTALLED_APPS=["airlock.integrations.django"])
    django.setup()
    from django.db import transaction

    import airlock
    from airlock.integrations.django import DjangoScope

    airlock.reset_configuration()
    enqueue = airlock.enqueue
    pending: list[transaction.Atomic] = []

    def fill(n: int) -> None:
        # Untimed: open the transaction, enqueue n intents, flush the scope inside it.
        block = transaction.atomic()
        block.__enter__()
        with airlock.scope(_cls=DjangoScope):
            for i in range(n):
                enqueue(task, i)
        pending.append(block)

    def commit() -> None:
        pending.pop().__exit__(None, None, None)

    # Small sizes are cheap and the figure divides by the smallest: time them more often.
    largest = max(sizes)
    return {
        n: best_of(commit, repeat=repeat * max(1, round(largest / n / 2.5)), setup=lambda n=n: fill(n))  # type: ignore[misc]
        for n in sizes
    }


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


def _figure(engine: str, times: dict[int, float]) -> Figure:
    sizes = sorted(times)
    small, large = sizes[0], sizes[-1]
    ratio = times[large] / (times[small] * large / small)
    detail = ", ".join(f"{n // 1000}k {times[n]:.2f}s" for n in sizes)
    return Figure(
        f"DjangoScope commit of {large // 1000}k vs {large // small}x {small // 1000}k, {engine}",
        ratio,
        "<= 1.5x",
        ratio <= 1.5,
        detail,
    )


def run(quick: bool = False) -> list[Figure]:
    sizes = QUICK_SIZES if quick else SIZES
    repeat = 1 if quick else 3
    engines = ["sqlite"] + (["postgresql"] if _postgres_reachable() else [])
    figures = []
    for engine in engines:
        child = subprocess.run(
            [sys.executable, "-m", "bench.bench_django_commit", engine, ",".join(map(str, sizes)), str(repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
        figures.append(_figure(engine, {int(n): t for n, t in json.loads(child.stdout).items()}))
    return figures


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], tuple(int(n) for n in sys.argv[2].split(",")), int(sys.argv[3]))))
