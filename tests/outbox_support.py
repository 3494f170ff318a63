"""What the outbox tests share: Celery apps with registered tasks, a Redis of their own, the rows.

The Redis here is started by the tests on a free port and stopped, frozen or
killed by its pid only; the shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from celery import Celery

from airlock.integrations.django.outbox import OutboxMessage, deduplicate

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


def memory_messages(queue: str = MEMORY_QUEUE) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """Take every message waiting in the in-memory broker: ``(task_id, args, kwargs)``."""
    found = []
    with memory_app.connection_for_write() as connection:
        simple = connection.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                args, kwargs, _ = message.payload
                found.append((message.headers["id"], args, kwargs))
        finally:
            simple.close()
    return found


def rows(using: str = "default") -> list[tuple[str, str, str]]:
    """``(intent_id, task, state)`` of every outbox row, in write order."""
    return list(OutboxMessage.objects.using(using).order_by("id").values_list("intent_id", "task", "state"))


def states(using: str = "default") -> list[str]:
    return [state for _, _, state in rows(using)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnRedis:
    """A redis-server of the test's own, on a free port, driven by its pid."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="airlock-outbox-redis-")
        self.pidfile = os.path.join(self.directory, "redis.pid")
        self.pid = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--daemonize", "yes",
                "--pidfile", self.pidfile,
                "--dir", self.directory,
                "--save", "",
                "--appendonly", "no",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError, ValueError):
                with open(self.pidfile) as handle:
                    self.pid = int(handle.read().strip())
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"own redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it for good (SIGKILL: no chance to save anything, as in a crash)."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.01)
            self.pid = 0
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pidfile)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def queued_ids(self, queue: str) -> list[str]:
        """The task ids of the messages waiting in a Celery queue, read from Redis itself."""
        client = self.client()
        try:
            return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]
        finally:
            client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child would be one) counts as gone.
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"
    return False


@contextlib.contextmanager
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def token() -> str:
    return uuid.uuid4().hex[:10]
