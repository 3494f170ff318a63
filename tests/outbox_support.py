"""What the outbox tests share: Celery apps with registered tasks, a Redis of their own, the rows.

The Redis here is started by the tests on a free port and stopped, frozen or
killed by its pid only; the shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery

from airlock.integrations.django.outbox import OutboxMessage, background_publisher, deduplicate
from airlock.integrations.django.outbox._markline import confirm_lines

MEMORY_QUEUE = "airlock-outbox-test"


RUNS: dict[str, list[str]] = collections.defaultdict(list)  # app name -> task ids ``once`` ran


def make_app(name: str, broker: str, queue: str = MEMORY_QUEUE) -> tuple[Celery, Any]:
    """A Celery app and its ``record`` task, registered as ``<name>.record``.

    It also has ``<name>.once``, a consumer that drops duplicates with
    ``deduplicate`` and notes each run's task id in ``RUNS[name]``.
    """
    app = Celery(name, broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # No publish-side reconnect loop: the outbox retries (docs/reliability.md).
        broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 1.0, "max_retries": 0},
    )

    @app.task(name=f"{name}.record", shared=False)
    def record(*args: Any, **kwargs: Any) -> None:
        return None

    @app.task(name=f"{name}.once", bind=True, shared=False)
    @deduplicate
    def once(self: Any, *args: Any) -> None:
        RUNS[name].append(self.request.id)

    return app, record


memory_app, memory_record = make_app("outbox_memory", "memory://")


@memory_app.task(name="outbox_memory.other", shared=False)
def memory_other(*args: Any, **kwargs: Any) -> None:
    return None


def drain_relay(relay: Any, rounds: int = 50, pause: float = 0.05) -> int:
    """Run the relay until nothing is due, riding out the first reconnects to a restarted broker."""
    sent = 0
    for _ in range(rounds):
        done = relay.run_once()
        sent += done.sent
        if done.unreachable is None and not (done.sent or done.failed):
            return sent
        if done.unreachable is not None:
            time.sleep(pause)
    raise AssertionError(f"the relay did not drain in {rounds} rounds")


def settle(timeout: float = 10.0) -> None:
    """Wait until this process's background publisher has published what it was handed.

    And until the database has answered every ready mark sent without waiting
    (PostgreSQL's mark line): a scope that returned has decided, but another
    connection may read its rows a moment before the mark has run.
    """
    publisher = background_publisher()
    if publisher is not None:
        assert publisher.drain(timeout), f"{publisher!r} did not drain in {timeout}s"
    confirm_lines()


def memory_messages(queue: str = MEMORY_QUEUE) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """Take every message waiting in the in-memory broker: ``(task_id, args, kwargs)``."""
    settle()
    found = []
    for message in take_memory_messages(queue):
        args, kwargs, _ = message.payload
        found.append((message.headers["id"], args, kwargs))
    return found


def take_memory_messages(queue: str = MEMORY_QUEUE) -> list[Any]:
    """Take every message waiting in the in-memory broker, as kombu gives them (headers and payload)."""
    taken = []
    with memory_app.connection_for_write() as connection:
        simple = connection.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    taken.append(simple.get(block=False))
                except simple.Empty:
                    return taken
        finally:
            simple.close()


def rows(using: str = "default") -> list[tuple[str, str, str]]:
    """``(intent_id, task, state)`` of every outbox row, in write order (once the publisher settled)."""
    settle()
    return list(OutboxMessage.objects.using(using).order_by("id").values_list("intent_id", "task", "state"))


def states(using: str = "default") -> list[str]:
    return [state for _, _, state in rows(using)]


def token() -> str:
    return uuid.uuid4().hex[:10]


class Clock:
    """The relay's clock, which a test moves; it starts a little ahead, so rows written now are due."""

    def __init__(self) -> None:
        self.now = time.time() + 5

    def __call__(self) -> float:
        return self.now


@contextmanager
def relay_outbox() -> Iterator[None]:
    """The outbox with no fast path (the relay does it all), Celery's in-memory transport emptied."""
    import airlock
    from airlock.integrations.django.outbox import OutboxScope, configure_outbox
    from airlock.integrations.executors.celery import celery_executor

    configure_outbox({"FAST_PATH": False})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    memory_messages()
    try:
        yield
    finally:
        configure_outbox(None)


def write_ready(*values: Any, task: Any = memory_record, using: str = "default") -> None:
    """One transaction that enqueues ``task(value)`` for each value."""
    from django.db import transaction

    import airlock

    with airlock.scope(using=using), transaction.atomic(using=using):
        for value in values:
            airlock.enqueue(task, value)
