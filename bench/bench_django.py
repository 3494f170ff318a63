"""What commit-awareness costs: ``DjangoScope`` and the middleware against a plain ``Scope``.

Figures, each a ratio against the plain-Scope baseline measured in the same run
(SQLite in memory, sync executor, no observers):
- enqueue+flush of 1,000 intents, autocommit (each intent is committed at once)
- the same inside ``atomic()`` (each intent waits on ``on_commit``; both sides commit)
- one request through ``AirlockMiddleware`` vs the same view in ``with airlock.scope()``

It configures Django, so it measures in a child process (``python -m bench
django`` can then run next to benchmarks that configure Django their own way).
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench._harness import Figure, best_of

N = 1_000


def task(i: int, key: str = "") -> None:
    pass


def _measure(repeat: int) -> dict[str, float]:
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=["airlock.integrations.django"],
    )
    django.setup()
    from django.db import transaction
    from django.http import HttpResponse
    from django.test import RequestFactory

    import airlock
    from airlock import Scope
    from airlock.integrations.django import AirlockMiddleware, DjangoScope

    airlock.reset_configuration()

    def flush_many(cls: type[Scope]) -> None:
        enqueue = airlock.enqueue
        with airlock.scope(_cls=cls):
            for i in range(N):
                enqueue(task, i, key="v")

    def in_atomic(cls: type[Scope]) -> None:
        with transaction.atomic():
            flush_many(cls)

    def view(request: object) -> HttpResponse:
        airlock.enqueue(task, 1, key="v")
        return HttpResponse()

    request = RequestFactory().get("/")
    middleware = AirlockMiddleware(view)

    def by_hand() -> None:
        with airlock.scope(_cls=Scope):
            view(request)

    return {
        "plain": best_of(lambda: flush_many(Scope), repeat=repeat) / N,
        "django": best_of(lambda: flush_many(DjangoScope), repeat=repeat) / N,
        "plain_atomic": best_of(lambda: in_atomic(Scope), repeat=repeat) / N,
        "django_atomic": best_of(lambda: in_atomic(DjangoScope), repeat=repeat) / N,
        "by_hand": best_of(by_hand, repeat=repeat, number=2_000),
        "middleware": best_of(lambda: middleware(request), repeat=repeat, number=2_000),
    }


def run(quick: bool = False) -> list[Figure]:
    repeat = 3 if quick else 9
    child = subprocess.run(
        [sys.executable, "-m", "bench.bench_django", str(repeat)], capture_output=True, text=True, check=True
    )
    t = json.loads(child.stdout)
    ns = 1e9
    return [
        Figure(
            "DjangoScope enqueue+flush, autocommit, vs plain Scope",
            t["django"] / t["plain"],
            "-",
            None,
            f"{t['django'] * ns:.0f} vs {t['plain'] * ns:.0f} ns per intent",
        ),
        Figure(
            "DjangoScope enqueue+flush+commit in atomic(), vs plain Scope",
            t["django_atomic"] / t["plain_atomic"],
            "-",
            None,
            f"{t['django_atomic'] * ns:.0f} vs {t['plain_atomic'] * ns:.0f} ns per intent",
        ),
        Figure(
            "request through AirlockMiddleware vs view in a plain scope",
            t["middleware"] / t["by_hand"],
            "-",
            None,
            f"{t['middleware'] * 1e6:.1f} vs {t['by_hand'] * 1e6:.1f} us per request",
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]))))
