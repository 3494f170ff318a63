"""A redis-server of a test's (or a benchmark's) own, on a free port, driven by its pid.

The shared Redis on 6379 is never stopped, frozen or flushed: fault injection
happens on this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

__all__ = ["OwnRedis", "free_port", "own_redis"]


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
