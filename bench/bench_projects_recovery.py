"""How soon a killed web worker's rows are delivered, with no person in the loop: ``python -m bench projects_recovery``.

Each project of ``tests/projects/`` (the Celery one, then the others the table
lists), started as ``tests/test_projects.py`` starts it: gunicorn with two
workers, the queue's own worker, ``python manage.py airlock_relay``, on a
PostgreSQL database and a Redis of the bench's own, every outbox option at its
default. A request commits an order with its tasks, then its gunicorn worker
SIGKILLs itself, after its COMMIT, before its scope decided: its rows are
``pending``, and only the relay's check of its writer's liveness can deliver them.

Measured per kill, one at a time: from the moment the client sees the
connection drop to the moment the last of the order's tasks starts on the real
worker (``shop_delivery.ran_at``). Twenty kills per project (five with
``--quick``); the figures are p50 and p99 (nearest rank: with twenty, the worst).
Goal: p99 <= 10 s.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

from tests.projects._common import PROJECTS, Project, new_token, percentile, started

from bench._harness import Figure

KILLS = 20
GOAL = 10.0  # seconds, p99


def _projects() -> list[Project]:
    """The table's projects that run here (``AIRLOCK_BENCH_PROJECTS=celery,huey``: those ids only)."""
    chosen = [name for name in os.environ.get("AIRLOCK_BENCH_PROJECTS", "").split(",") if name]
    found = []
    for param in PROJECTS:
        project = param.values[0]  # type: ignore[attr-defined]
        skipped = any(mark.name == "skipif" and mark.args and mark.args[0] for mark in param.marks)  # type: ignore[attr-defined]
        missing = [name for name in project.modules if importlib.util.find_spec(name) is None]
        if (not chosen or param.id in chosen) and not skipped and not missing:  # type: ignore[attr-defined]
            found.append(project)
    return found


def measure(project: Project, kills: int) -> list[float]:
    """Seconds from each kill to its order's last task running on the worker."""
    with tempfile.TemporaryDirectory(prefix="airlock-bench-recovery-") as logs, started(project, Path(logs)) as stack:
        stack.barrier()  # everything warm: the worker consumes, the relay serves
        seconds = []
        for number in range(kills):
            token = new_token(f"kill{number}")
            killed = stack.order(token, crash=True)
            (order_id,) = stack.committed(token)
            stack.wait_delivered([order_id], timeout=60)
            seconds.append(stack.ran_at([order_id])[order_id] - killed)
            stack.web.wait_ready("/ping/")  # type: ignore[union-attr]  # gunicorn replaced the worker
        return seconds


def run(quick: bool = False) -> list[Figure]:
    kills = 5 if quick else KILLS
    figures = []
    for project in _projects():
        started_at = time.monotonic()
        seconds = measure(project, kills)
        p50, p99 = percentile(seconds, 0.5), percentile(seconds, 0.99)
        detail = f"{kills} kills in {time.monotonic() - started_at:.0f}s; each: " + ", ".join(
            f"{value:.2f}" for value in seconds
        )
        figures.append(Figure(f"{project.name}: killed writer to task run, p50", p50, "", None, detail, unit="s"))
        figures.append(
            Figure(f"{project.name}: killed writer to task run, p99", p99, f"<= {GOAL:.0f}s", p99 <= GOAL, unit="s")
        )
    return figures
