"""An executor that behaves like a worker process: each task runs on a new thread
with its own database connection, so it sees committed rows only."""

from __future__ import annotations

import threading
from typing import Any

from django.db import connections

from airlock import Intent


class ThreadWorker:
    """Executor: start a thread per intent; ``results`` holds each return value or exception."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __call__(self, intent: Intent) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(intent,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _run(self, intent: Intent) -> None:
        try:
            result: Any = intent.task(*intent.args, **intent.kwargs)
        except Exception as error:
            result = error
        finally:
            # A worker's connection must not outlive it: the test database is
            # dropped at the end of the session.
            connections.close_all()
        with self._lock:
            self.results.append(result)

    def wait_idle(self, timeout: float = 10.0) -> None:
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"a worker thread did not finish within {timeout}s")
