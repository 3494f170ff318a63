"""Real Celery apps, workers and broker probes for the Celery tests.

One app per broker, a journal the tasks write into (the worker runs in a thread
of the test process, so it is plain shared memory), and a way to ask the broker
itself how many messages sit in a queue.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import after_task_publish

import airlock
from airlock.integrations.celery import AirlockTask
from tests.conftest import require_service

PREFIX = f"airlock-celery-test-{os.getpid()}"
DEFAULT_QUEUE = f"{PREFIX}.default"
ROUTED_QUEUE = f"{PREFIX}.routed"  # the worker consumes it too
IDLE_QUEUE = f"{PREFIX}.idle"  # nobody consumes it: messages stay in the broker
REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
# Every Redis key of these tests lives under this prefix (kombu's global_keyprefix).
REDIS_KEYPREFIX = f"{PREFIX}:"
WAIT = 20.0  # seconds: generous, but only reached when something is wrong


class Journal:
    """What tasks and publishes reported, readable from the test thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: list[dict[str, Any]] = []

    def add(self, **entry: Any) -> None:
        with self._changed:
            self._entries.append(entry)
            self._changed.notify_all()

    def of(self, token: str, kind: str = "run") -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self._entries if e["token"] == token and e["kind"] == kind]

    def wait_for(self, token: str, count: int, kind: str = "run") -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while len(found := self.of(token, kind)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"waited {WAIT}s for {count} {kind}(s) of {token}, got {found}")
                self._changed.wait(left)
        return found


JOURNAL = Journal()


def new_token() -> str:
    return uuid.uuid4().hex[:12]


@after_task_publish.connect(weak=False)
def _note_publish(sender: str, body: Any, headers: dict[str, Any], **kwargs: Any) -> None:
    args = body[0] if isinstance(body, tuple) else ()
    if sender.startswith("airlock_test.") and args:
        JOURNAL.add(kind="published", token=args[0], task=sender, id=headers["id"], args=args, at=time.time())


@dataclass
class Broker:
    """One broker with its app, its tasks, and a way to count queued messages."""

    name: str
    app: Celery
    record: Any
    parent: Any

    def depth(self, queue: str) -> int:
        """How many messages wait in ``queue``, asked of the broker itself."""
        if self.name == "redis":
            return redis_depth(queue)
        with self.app.connection_for_write() as connection:
            return int(connection.default_channel.queue_declare(queue=queue, passive=True).message_count)

    def purge(self, queue: str) -> None:
        with self.app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)

    def drain(self, queue: str = DEFAULT_QUEUE) -> None:
        """Wait until the single consumer has worked through ``queue`` up to now.

        A FIFO queue with one consumer runs a sentinel only after everything
        published before it, so any duplicate would have run by then.
        """
        token = new_token()
        self.record.apply_async((token, "sentinel"), queue=queue)
        JOURNAL.wait_for(token, 1)


def redis_depth(queue: str) -> int:
    """LLEN of the queue's Redis lists (kombu keeps one list per priority step)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(int(client.llen(key)) for key in redis_keys(queue))
    finally:
        client.close()


def redis_keys(queue: str) -> list[str]:
    # kombu's Redis transport: priority 0 is the queue's name, the others get a suffix.
    name = REDIS_KEYPREFIX + queue
    return [name] + [f"{name}\x06\x16{step}" for step in (3, 6, 9)]


def configure_app(app: Celery, name: str) -> None:
    """Point ``app`` at the ``redis`` or ``rabbitmq`` broker, with this module's queues."""
    app.conf.update(
        broker_url=REDIS_URL if name == "redis" else RABBITMQ_URL,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # pickle, because the user documents' examples pass `...` as an argument
        task_serializer="pickle",
        accept_content=["pickle", "json"],
        broker_transport_options={"global_keyprefix": REDIS_KEYPREFIX} if name == "redis" else {},
    )


def make_broker(name: str) -> Broker:
    app = Celery(f"airlock_test_{name}", set_as_current=False)
    configure_app(app, name)

    @app.task(name="airlock_test.record", bind=True, shared=False)
    def record(self: Any, token: str, *args: Any, **kwargs: Any) -> None:
        JOURNAL.add(
            kind="run",
            token=token,
            args=args,
            kwargs=kwargs,
            id=self.request.id,
            parent_id=self.request.parent_id,
            routing_key=(self.request.delivery_info or {}).get("routing_key"),
            at=time.time(),
        )

    @app.task(name="airlock_test.parent", bind=True, base=AirlockTask, max_retries=2, shared=False)
    def parent(self: Any, token: str, mode: str) -> None:
        attempt = self.request.retries
        airlock.enqueue(record, token, "child", attempt)
        if attempt == 0 and mode == "retry":
            raise self.retry(countdown=0)
        if attempt == 0 and mode == "retry_nothrow":
            self.retry(countdown=0, throw=False)
        headers = dict(self.request.headers or {})
        JOURNAL.add(kind="body_done", token=token, attempt=attempt, headers=headers, at=time.time())
        if mode == "raise":
            raise ValueError("the parent task failed on purpose")

    return Broker(name, app, record, parent)


@contextlib.contextmanager
def running_worker(name: str) -> Iterator[Broker]:
    """A real worker in a thread: one process, concurrency 1, prefetch 1."""
    require_service(name)
    broker = make_broker(name)
    with broker.app.connection_for_write() as connection:
        for queue in (DEFAULT_QUEUE, ROUTED_QUEUE, IDLE_QUEUE):
            connection.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            connection.default_channel.queue_purge(queue)
    try:
        with serving(broker.app, [DEFAULT_QUEUE, ROUTED_QUEUE]):
            yield broker
    finally:
        _clean(broker)


@contextlib.contextmanager
def serving(app: Celery, queues: list[str]) -> Iterator[None]:
    """A real worker for ``app`` in a thread, consuming ``queues``."""
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=queues,
        shutdown_timeout=15,
        # The blocking loop: with the event loop, a solo pool on py-amqp can
        # leave prefetched frames unnoticed in its buffer for seconds.
        use_eventloop=False,
    ):
        yield


def delete_keys(url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` (a run's own) on the Redis at ``url``; never flush it."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _clean(broker: Broker) -> None:
    if broker.name == "redis":
        delete_keys(REDIS_URL, REDIS_KEYPREFIX)
        return
    with broker.app.connection_for_write() as connection:
        for queue in (DEFAULT_QUEUE, ROUTED_QUEUE, IDLE_QUEUE):
            connection.default_channel.queue_delete(queue)


# -- canvas: chains, groups and chords need a result backend -------------------------

CANVAS_QUEUE = f"{PREFIX}.canvas"
CANVAS_IDLE_QUEUE = f"{PREFIX}.canvas-idle"  # nobody consumes it: messages stay in the broker


@dataclass
class Canvas:
    """A Redis app with a Redis result backend, and small tasks to build canvases from."""

    app: Celery
    add: Any
    mul: Any
    total: Any
    fail: Any
    note: Any
    on_error: Any
    fan_out: Any

    def depth(self, queue: str) -> int:
        """How many messages wait in ``queue``, asked of Redis itself."""
        return redis_depth(queue)

    def purge(self, queue: str) -> None:
        with self.app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)


def make_canvas() -> Canvas:
    app = Celery("airlock_test_canvas", set_as_current=False)
    configure_app(app, "redis")
    app.conf.update(
        task_default_queue=CANVAS_QUEUE,
        result_backend=REDIS_URL,
        result_backend_transport_options={"global_keyprefix": REDIS_KEYPREFIX},
        result_expires=600,
        # One backend for the worker's thread and the test's, so the test can close it.
        result_backend_thread_safe=True,
    )

    @app.task(name="airlock_canvas.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="airlock_canvas.mul", shared=False)
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="airlock_canvas.total", shared=False)
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task(name="airlock_canvas.fail", shared=False)
    def fail(x: int) -> None:
        raise ValueError(f"failed on purpose with {x}")

    @app.task(name="airlock_canvas.note", bind=True, shared=False)
    def note(self: Any, value: Any, token: str) -> None:
        """A callback: writes what it was given into the journal."""
        JOURNAL.add(kind="run", token=token, args=(value,), id=self.request.id, at=time.time())

    @app.task(name="airlock_canvas.on_error", shared=False)
    def on_error(request: Any, error: BaseException, traceback: Any, token: str) -> None:
        """An errback (Celery calls it with the failed task's request, error and traceback)."""
        JOURNAL.add(kind="errback", token=token, failed_id=request.id, error=str(error), at=time.time())

    @app.task(name="airlock_canvas.fan_out", base=AirlockTask, shared=False)
    def fan_out(token: str, numbers: list[int], fail: bool) -> None:
        """Old code in an AirlockTask: applies a chord with Celery's own call."""
        from celery import chord

        chord((add.s(number, number) for number in numbers), note.s(token)).apply_async()
        JOURNAL.add(kind="body_done", token=token, at=time.time())
        if fail:
            raise ValueError("the fan-out failed on purpose")

    return Canvas(app, add, mul, total, fail, note, on_error, fan_out)


@contextlib.contextmanager
def running_canvas_worker() -> Iterator[Canvas]:
    """A real worker on Redis, with a Redis result backend, consuming the canvas queue."""
    require_service("redis")
    canvas = make_canvas()
    with canvas.app.connection_for_write() as connection:
        for queue in (CANVAS_QUEUE, CANVAS_IDLE_QUEUE):
            connection.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            connection.default_channel.queue_purge(queue)
    try:
        with serving(canvas.app, [CANVAS_QUEUE]):
            yield canvas
    finally:
        # The result backend: results that die unsubscribe over its
        # pub/sub, so let the tests' results go first, then close it and its pool.
        gc.collect()
        consumer = canvas.app.backend.result_consumer
        consumer.stop()
        # A result that outlives this (a test's traceback, a reference cycle the final
        # collection clears) would unsubscribe as it dies, opening a new connection
        # that nobody closes. The backend is finished with: let it forget instead.
        consumer.cancel_for = lambda task_id: None
        canvas.app.backend.client.connection_pool.disconnect()
        # Every key (queues, results, chord counters) is under the Redis prefix.
        _clean(Broker("redis", canvas.app, record=None, parent=None))
