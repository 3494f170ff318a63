"""The queue the shop's tasks go through: Huey on SQLite (the default) or Celery on Redis.

Each backend is a real queue with a real consumer, started in this process:

- ``HueyBackend``: ``huey.SqliteHuey`` (a file next to the shop's database, no server)
  and a Huey consumer (``huey.create_consumer()``) with one worker thread. Tasks are
  declared with airlock's ``airlock_task``, so each run is a scope: a task's
  follow-ups go out only once it has succeeded. airlock sends through ``huey_executor``.
- ``CeleryBackend`` (``--celery``): the local Redis as the broker and a Celery worker
  in a thread. Tasks use ``AirlockTask`` and airlock sends through ``celery_executor``.
  Celery reaches Redis through a TCP link of the demo's own (:class:`Link`).

Each can make its broker really unreachable and bring it back (``cut()`` and
``mend()``, for scene 5): Huey's storage directory is unmounted, Celery's link to
Redis is cut. The local Redis itself is never stopped: it may be shared.

Both count what reaches the broker (from the queue's own signals: Huey's
``SIGNAL_ENQUEUED``, Celery's ``after_task_publish``, less the messages of a Redis
pipeline whose push failed, which airlock reports on ``dispatch_failed``) and what the consumer has
finished, so a scene can wait for the consumer to settle and show exact numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Backend", "CeleryBackend", "DemoError", "HueyBackend", "current", "huey", "task", "use"]

SETTLE_SECONDS = 15.0


class DemoError(Exception):
    """Something the person running the demo can fix; shown as one line, without a traceback."""


def settle_publisher(timeout: float = 10.0) -> None:
    """Wait until this process's background publisher has published what the commits handed it."""
    from airlock.integrations.django.outbox import background_publisher

    publisher = background_publisher()
    if publisher is not None and not publisher.drain(timeout):
        raise DemoError(f"the outbox's background publisher still holds {publisher.depth} rows after {timeout:.0f} s")


class Backend:
    """A queue with its consumer, and counts of the messages it took in and finished."""

    name = ""
    description = ""  # for the demo's first line
    where = ""  # the broker's storage, as the scenes name it
    outage = ""  # how cut() made the broker unreachable, as scene 5 says it
    executor: Callable[[Any], Any]

    def __init__(self) -> None:
        self.outbox: dict[str, Any] = {}  # what the backend adds to AIRLOCK["OUTBOX"]
        self._changed = threading.Condition()
        self.sent = 0  # messages handed to the broker's storage
        self.finished = 0  # task runs the consumer has finished

    # -- what each backend provides ------------------------------------------------

    def declare(self, fn: Callable[..., Any]) -> Any:
        """Turn ``fn`` into a task of this queue whose runs are airlock scopes."""
        raise NotImplementedError

    def start_consumer(self) -> None:
        raise NotImplementedError

    def stop_consumer(self) -> None:
        raise NotImplementedError

    def waiting(self) -> int:
        """How many messages sit in the broker's storage, asked of the storage itself."""
        raise NotImplementedError

    def cut(self) -> None:
        """Make the broker unreachable for publishing, for real (scene 5); ``mend()`` undoes it."""
        raise NotImplementedError

    def mend(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the consumer if it runs and remove what the demo left in the broker."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------

    def _note_sent(self) -> None:
        with self._changed:
            self.sent += 1
            self._changed.notify_all()

    def _note_finished(self) -> None:
        with self._changed:
            self.finished += 1
            self._changed.notify_all()

    def settle(self, timeout: float = SETTLE_SECONDS) -> None:
        """Wait until the consumer has finished every message sent so far."""
        deadline = time.monotonic() + timeout
        settle_publisher(timeout)
        with self._changed:
            while self.finished < self.sent or self.waiting():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(
                        f"the {self.name} consumer finished {self.finished} of {self.sent} messages "
                        f"within {timeout:.0f} s; is the machine very busy? Run the demo again"
                    )
                self._changed.wait(min(left, 0.05))


# The Huey instance of this run, for ``AIRLOCK["OUTBOX"]["HUEY"]``: the relay resolves
# task names through the registries of the instances listed there.
huey: Any = None


class HueyBackend(Backend):
    """Huey on its SQLite storage, with a real Huey consumer (one worker thread).

    The storage is a file in a directory of its own, ``queue/``: scene 5 takes the
    directory away (as when the volume holding it is unmounted), so that the
    storage really cannot be opened, and puts it back.
    """

    name = "Huey"

    def __init__(self, directory: Path) -> None:
        super().__init__()
        global huey
        from huey import Huey, signals
        from huey.storage import SqliteStorage

        from airlock.integrations.huey import huey_executor

        backend = self

        class CountingStorage(SqliteStorage):  # type: ignore[misc]
            """Counts a message once the storage has it (Huey's SIGNAL_ENQUEUED fires before it tries)."""

            def enqueue(self, data: bytes, priority: Any = None) -> None:
                super().enqueue(data, priority)
                backend._note_sent()

        self.executor = huey_executor
        self.folder = directory / "queue"
        self.folder.mkdir()
        self._away = directory / "queue-unmounted"
        self.file = self.folder / "huey.sqlite3"
        self.huey = huey = Huey("airlock-demo", storage_class=CountingStorage, filename=str(self.file))
        finished = (
            signals.SIGNAL_COMPLETE,
            signals.SIGNAL_ERROR,
            signals.SIGNAL_CANCELED,
            signals.SIGNAL_EXPIRED,
            signals.SIGNAL_REVOKED,
            signals.SIGNAL_INTERRUPTED,
        )
        self.huey.signal(*finished)(lambda signal, task, *args: self._note_finished())
        self.consumer: Any = None
        self.where = "Huey's SQLite storage"
        self.outbox = {"HUEY": ["demo.queues.huey"]}
        self.description = (
            f"Huey on its SQLite storage ({self.folder.name}/{self.file.name}, no server) "
            "with a Huey consumer in this process"
        )

    def declare(self, fn: Callable[..., Any]) -> Any:
        from airlock.integrations.huey import airlock_task

        return airlock_task(self.huey)(fn)

    def start_consumer(self) -> None:
        self.consumer = self.huey.create_consumer(
            workers=1, periodic=False, initial_delay=0.01, max_delay=0.05, check_worker_health=False
        )
        # Consumer.start() installs the signal handlers of a consumer process; keep
        # ours, so that Ctrl-C still stops the demo.
        saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.consumer.start()
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)

    def stop_consumer(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None

    def waiting(self) -> int:
        return int(self.huey.pending_count() + self.huey.scheduled_count())

    def cut(self) -> None:
        self.huey.storage.close()  # its one connection: the next use must open the file again
        self.folder.rename(self._away)
        self.outage = f"{self.folder.name}/ (the directory of Huey's SQLite file) is unmounted"

    def mend(self) -> None:
        self._away.rename(self.folder)

    def close(self) -> None:
        self.stop_consumer()
        if self._away.exists():
            self.mend()
        self.huey.storage.close()


class Link:
    """A TCP relay of this process between Celery and the Redis it uses, which scene 5 cuts.

    The local Redis may be shared, so the demo never stops it: it cuts its own
    link to it instead (open connections reset, new ones refused, as when the
    network to the broker goes down), then restores it on the same port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="demo-redis-link", daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                return  # cut
            server.settimeout(None)
            with self._lock:
                self._sockets |= {client, server}
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


class CeleryBackend(Backend):
    """Celery with the local Redis as its broker, and a real Celery worker in a thread."""

    name = "Celery"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import redis
            from celery import Celery
            from celery.signals import after_task_publish, task_postrun

            from airlock.integrations.celery import AirlockTask
            from airlock.integrations.executors.celery import celery_executor
        except ImportError as error:
            raise DemoError(
                f"--celery needs Celery ({error}): pip install -e '.[celery]', then run `make demo ARGS=--celery`"
            ) from error
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
        try:
            self._redis.ping()
        except redis.RedisError as error:
            raise DemoError(
                f"--celery needs Redis on {url} and cannot reach it ({error}); start one "
                "(`redis-server --daemonize yes`) or run `make demo` for the embedded Huey demo"
            ) from error
        # Everything this run puts in Redis lives under one prefix, removed at the end.
        self.prefix = f"airlock-demo-{os.getpid()}:"
        self.queue = "shop"
        # Celery reaches Redis through a link of the demo's own, which scene 5 cuts.
        parts = urlsplit(url)
        self.link = Link(parts.hostname or "127.0.0.1", parts.port or 6379)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"127.0.0.1:{self.link.port}"
        linked = urlunsplit(parts._replace(netloc=f"{credentials}@{netloc}" if credentials else netloc))
        self.app = Celery("airlock_demo", set_as_current=False)
        self.app.conf.update(
            broker_url=linked,
            # Publishing to a broker that is down fails in a second (docs/reliability.md).
            broker_transport_options={
                "global_keyprefix": self.prefix,
                "max_retries": 1,
                "socket_connect_timeout": 2,
                "socket_timeout": 5,
            },
            task_default_queue=self.queue,
            worker_prefetch_multiplier=1,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=False,
            task_ignore_result=True,
        )
        self._base = AirlockTask
        self.executor = celery_executor
        self.where = f"Redis (Celery's queue {self.queue!r})"
        self.description = f"Celery with Redis on {url} as its broker, and a Celery worker in this process"
        after_task_publish.connect(self._published, weak=False)
        task_postrun.connect(self._ran, weak=False)
        # The outbox sends Celery's messages to Redis in one pipeline: Celery says a message
        # was published when it joined the pipeline, and a push that fails takes it back.
        from airlock.signals import dispatch_failed

        dispatch_failed.connect(self._not_pushed, weak=False)
        self._names: set[str] = set()
        self._worker: AbstractContextManager[Any] | None = None

    def _published(self, sender: Any = None, **kwargs: Any) -> None:
        if sender in self._names:
            self._note_sent()

    def _not_pushed(self, sender: Any = None, **kwargs: Any) -> None:
        intent, error = kwargs.get("intent"), kwargs.get("error")
        if type(error).__name__ == "BatchPublishError" and getattr(intent, "name", None) in self._names:
            with self._changed:
                self.sent -= 1
                self._changed.notify_all()

    def _ran(self, sender: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "app", None) is self.app:
            self._note_finished()

    def declare(self, fn: Callable[..., Any]) -> Any:
        self._names.add(fn.__name__)
        return self.app.task(name=fn.__name__, base=self._base, shared=False)(fn)

    def start_consumer(self) -> None:
        from celery.contrib.testing.worker import start_worker

        self._worker = start_worker(
            self.app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=[self.queue],
            shutdown_timeout=15,
        )
        self._worker.__enter__()

    def stop_consumer(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.__exit__(None, None, None)

    def cut(self) -> None:
        self.link.cut()
        self.outage = "the demo cut its link to Redis (Redis itself, maybe shared, is left alone)"

    def mend(self) -> None:
        self.link.open()

    def waiting(self) -> int:
        # kombu keeps one Redis list per priority step: the queue's name, then suffixed ones.
        name = self.prefix + self.queue
        keys = [name] + [f"{name}\x06\x16{step}" for step in (3, 6, 9)]
        return sum(int(self._redis.llen(key)) for key in keys)

    def close(self) -> None:
        try:
            self.stop_consumer()
        finally:
            keys = list(self._redis.scan_iter(match=f"{self.prefix}*"))
            if keys:
                self._redis.delete(*keys)
            self._redis.close()
            self.link.cut()


current: Backend | None = None


def use(backend: Backend) -> None:
    """Choose the queue the shop's tasks are declared on (before ``demo.shop.tasks`` is imported)."""
    global current
    current = backend


def task(fn: Callable[..., Any]) -> Any:
    """Declare ``fn`` as a task of the chosen queue: ``@task`` in ``demo/shop/tasks.py``."""
    if current is None:
        raise DemoError("demo.queues.use(backend) must be called before the shop's tasks are imported")
    return current.declare(fn)
