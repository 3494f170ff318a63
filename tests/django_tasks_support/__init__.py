"""Support for the ``django.tasks`` tests: task functions and a real ``db_worker``.

``tasks`` holds the tasks the worker imports. ``settings`` is what the worker
subprocess runs with: the test project's settings pointed at the session's test
database. :class:`Worker` runs django-tasks-db's ``db_worker`` command on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO

from tests.django_q_support import ROOT, wait_for
from tests.django_q_support import Worker as _Subprocess

__all__ = ["Worker", "wait_for"]


class Worker(_Subprocess):
    """A ``django-admin db_worker`` subprocess on the test database, polling every 50 ms.

    Stopped (and its output read) as the django-q2 tests' cluster is.
    """

    def __init__(self, database: str, backend: str, log: IO[bytes]) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.django_tasks_support.settings",
            "AIRLOCK_TASKS_DB": database,
            "AIRLOCK_OTEL_WORKER": "1",  # traces its runs (tests/otel_django_q_tasks.py)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "db_worker", "--backend", backend, "--queue-name", "*",
             "--interval", "0.05", "--no-startup-delay", "--no-reload", "--verbosity", "2"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
