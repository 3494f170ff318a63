"""A web process killed after its commit, before its scope decided: ``python -m tests.outbox_writer MODE``.

For tests/test_django_outbox_writers.py and bench/bench_writer_recovery.py. It runs on the
test's databases, named in the environment by :func:`tests.outbox_process.environment`.

- ``undecided``: commits ``OUTBOX_TEST_COUNT`` intents (arguments ``OUTBOX_TEST_TAG``
  and a number) in one transaction inside a scope, then waits before the scope
  decides, as a request would between its view's commit and its response. It prints
  ``committed <pid> <writer id>`` once the commit is done, and waits on stdin: the
  test SIGKILLs it there.
- ``fork``: the same in a parent, which then forks; the child commits its own
  undecided intents. Each prints ``<parent|child> <pid> <writer id>`` and waits.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def _commit_undecided(record: Any, tag: str) -> Any:
    """Enter a scope, commit intents in it, and leave it undecided; the scope."""
    from django.db import transaction

    import airlock

    scope = airlock.scope().enter()
    with transaction.atomic():
        for number in range(int(os.environ.get("OUTBOX_TEST_COUNT", "1"))):
            airlock.enqueue(record, tag, number)
    return scope


def _configure() -> Any:
    from tests.outbox_process import _setup

    app, record = _setup()
    import airlock
    from airlock.integrations.django.outbox import OutboxScope
    from airlock.integrations.executors.celery import celery_executor

    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    return app, record


def _writer() -> str:
    from airlock.integrations.django.outbox._writers import writer_id

    return writer_id()


def undecided() -> None:
    app, record = _configure()
    scope = _commit_undecided(record, os.environ.get("OUTBOX_TEST_TAG", "undecided"))
    print(f"committed {os.getpid()} {_writer()}", flush=True)
    sys.stdin.readline()  # SIGKILLed here
    scope.exit()  # an end of input (the test failed): leave without deciding
    del app


def fork() -> None:
    app, record = _configure()
    from django.db import connections

    _commit_undecided(record, "parent")
    # The child must not share Django's own connection; the writer lock's stays open.
    connections.close_all()
    pid = os.fork()
    role = "parent" if pid else "child"
    if not pid:
        _commit_undecided(record, "child")
    print(f"{role} {os.getpid()} {_writer()}", flush=True)
    while True:  # SIGKILLed here
        time.sleep(60)
    del app


if __name__ == "__main__":
    {"undecided": undecided, "fork": fork}[sys.argv[1]]()
