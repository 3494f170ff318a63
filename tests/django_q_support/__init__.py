"""Support for the django-q2 tests: worker settings, task functions, a cluster runner.

``settings`` is what the ``qcluster`` subprocess runs with: the test project's
settings pointed at the test database and at a queue of its own.
``tasks`` holds the task functions the worker imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A ``django-admin qcluster`` subprocess (one worker process) on the test database."""

    def __init__(self, database: str, queue: str, log: IO[bytes]) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.django_q_support.settings",
            "AIRLOCK_DJANGO_Q_DB": database,
            "AIRLOCK_DJANGO_Q_QUEUE": queue,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.log = log
        # A session of its own, so stopping it can reach the worker processes it forks.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def wait_for(probe: Callable[[], T], *, timeout: float = 20.0, what: str, worker: Worker | None = None) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(
                f"the worker subprocess exited ({worker.process.returncode}) while waiting for {what}"
                f"\n--- worker output ---\n{worker.output()}"
            )
        if time.monotonic() > deadline:
            detail = f"\n--- worker output ---\n{worker.output()}" if worker is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.05)
