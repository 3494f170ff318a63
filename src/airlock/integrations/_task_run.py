"""Which executor a task-run scope opens with, shared by the queue integrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import airlock
from airlock._intent import Intent

__all__ = ["executor_for_run"]


def executor_for_run(
    explicit: Callable[[Intent], Any] | None, own_queue: Callable[[Intent], Any]
) -> Callable[[Intent], Any]:
    """The executor of one task run: ``explicit``, else the configured one, else ``own_queue``.

    A task that runs on a worker and enqueues follow-ups means them for the same
    queue ("is also queued via Celery"), not for an inline call in the worker,
    so a run's own queue is the default, and ``airlock.configure(executor=...)``
    or the integration's own ``executor=`` still win. Read at each run, so a
    ``configure()`` made after the task was declared applies.
    """
    if explicit is not None:
        return explicit
    configured: Callable[[Intent], Any] | None = airlock.get_configuration()["executor"]
    return own_queue if configured is None else configured
