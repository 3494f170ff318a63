"""A relay or a web process of its own, for the outbox tests that kill one: ``python -m tests.outbox_process``.

It runs on the test's databases and the test's own Redis, named in the
environment by :func:`environment`:

- ``relay``: ``manage.py airlock_relay`` (``--once`` with ``OUTBOX_TEST_ONCE=1``; more
  arguments as a JSON list in ``OUTBOX_TEST_RELAY_ARGS``).
- ``web``: commits ``OUTBOX_TEST_COUNT`` intents in one transaction and lets the
  fast path publish them; with ``OUTBOX_TEST_KILL_AFTER=n`` it SIGKILLs itself
  right after Celery published the n-th message, inside the fast path (on Redis
  the messages wait in a pipeline until it is pushed: ``OUTBOX_TEST_PUSH_EVERY``
  sets how many it holds).
- ``exit``: commits ``OUTBOX_TEST_COUNT`` intents in one transaction and ends at
  once, with the background publisher still holding them: normally
  (``atexit``), or with ``OUTBOX_TEST_END=sigterm`` by SIGTERM to itself, or with
  ``OUTBOX_TEST_END=sigkill_after_the_mark`` by SIGKILL right after its ready mark
  was sent on the mark line (its answer never read).

``OUTBOX_TEST_OPTIONS`` (JSON) adds to ``AIRLOCK["OUTBOX"]``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def environment(databases: dict[str, str], broker: str, app: str, queue: str, **extra: Any) -> dict[str, str]:
    """The environment for a child process: the parent's, plus where to find everything."""
    env = dict(os.environ)
    env.update(
        OUTBOX_TEST_DATABASES=json.dumps(databases),
        OUTBOX_TEST_BROKER=broker,
        OUTBOX_TEST_APP=app,
        OUTBOX_TEST_QUEUE=queue,
        DJANGO_SETTINGS_MODULE="tests.djangoproject.settings",
    )
    env.update({f"OUTBOX_TEST_{key.upper()}": str(value) for key, value in extra.items()})
    return env


def _setup() -> Any:
    import django
    from django.conf import settings

    for alias, name in json.loads(os.environ["OUTBOX_TEST_DATABASES"]).items():
        settings.DATABASES[alias]["NAME"] = name
    options = {"LEASE": float(os.environ.get("OUTBOX_TEST_LEASE", "60")), "POLL": 0.05}
    settings.AIRLOCK = {"OUTBOX": {**options, **json.loads(os.environ.get("OUTBOX_TEST_OPTIONS", "{}"))}}
    django.setup()
    from tests.outbox_support import make_app

    return make_app(os.environ["OUTBOX_TEST_APP"], os.environ["OUTBOX_TEST_BROKER"], os.environ["OUTBOX_TEST_QUEUE"])


def relay() -> None:
    app = _setup()  # held: Celery keeps only weak references to its apps
    from django.core.management import call_command

    arguments = ["--once"] if os.environ.get("OUTBOX_TEST_ONCE") == "1" else []
    arguments += json.loads(os.environ.get("OUTBOX_TEST_RELAY_ARGS", "[]"))
    call_command("airlock_relay", *arguments, "--batch-size", os.environ.get("OUTBOX_TEST_BATCH", "100"))
    del app


def web() -> None:
    _, record = _setup()
    from celery.signals import after_task_publish
    from django.db import transaction

    import airlock
    from airlock.integrations.django.outbox import OutboxScope
    from airlock.integrations.executors.celery import celery_executor

    kill_after = int(os.environ.get("OUTBOX_TEST_KILL_AFTER", "0"))
    if os.environ.get("OUTBOX_TEST_PUSH_EVERY"):
        from airlock.integrations.django.outbox import _publish

        _publish.PUSH_EVERY = int(os.environ["OUTBOX_TEST_PUSH_EVERY"])
    published = [0]

    @after_task_publish.connect(weak=False)
    def _count(**kwargs: Any) -> None:
        published[0] += 1
        if published[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    with airlock.scope(), transaction.atomic():
        for number in range(int(os.environ["OUTBOX_TEST_COUNT"])):
            airlock.enqueue(record, number)
    print(f"published {published[0]}", flush=True)


def exit() -> None:
    _, record = _setup()
    from django.db import transaction

    import airlock
    from airlock.integrations.django.outbox import OutboxScope, background_publisher
    from airlock.integrations.executors.celery import celery_executor

    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    if os.environ.get("OUTBOX_TEST_END") == "sigkill_after_the_mark":
        # Killed the moment the ready mark is on its way, its answer never read.
        from airlock.integrations.django.outbox._markline import MarkLine

        send = MarkLine.send

        def send_then_die(self: Any, statement: str) -> None:
            send(self, statement)
            os.kill(os.getpid(), signal.SIGKILL)

        MarkLine.send = send_then_die  # type: ignore[method-assign]
    with airlock.scope(), transaction.atomic():
        for number in range(int(os.environ["OUTBOX_TEST_COUNT"])):
            airlock.enqueue(record, number)
    publisher = background_publisher()
    print(f"handed {0 if publisher is None else publisher.depth}", flush=True)
    if os.environ.get("OUTBOX_TEST_END") == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    {"relay": relay, "web": web, "exit": exit}[sys.argv[1]]()
