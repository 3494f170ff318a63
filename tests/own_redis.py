"""The outbox tests' Redis: ``tests.faults.OwnRedis`` with the few extras they read.

The shared Redis on 6379 is never stopped, frozen or flushed: fault injection
happens on this one. Starting, freezing and killing it by its pid is
``tests/faults.py``'s; this adds what the outbox tests ask of it (a client, the
task ids waiting in a Celery queue) and makes ``stop()`` a crash.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import redis

from tests.faults import OwnRedis as _FaultsRedis
from tests.faults import free_port

__all__ = ["OwnRedis", "free_port", "own_redis"]


class OwnRedis(_FaultsRedis):
    """A redis-server of the test's own, on a free port, driven by its pid."""

    def stop(self) -> None:
        """Stop it for good (SIGKILL: no chance to save anything, as in a crash)."""
        if self.pid is not None:
            self.kill()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def queued_ids(self, queue: str) -> list[str]:
        """The task ids of the messages waiting in a Celery queue, read from Redis itself."""
        client = self.client()
        try:
            return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]
        finally:
            client.close()


@contextlib.contextmanager
def own_redis() -> Iterator[OwnRedis]:
    with OwnRedis() as server:  # started on the way in, killed and removed on the way out
        yield server
