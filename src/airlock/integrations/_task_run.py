"""Which executor a task-run scope opens with, shared by the queue integrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import airlock
from airlock._intent import Intent

__all__ = ["executor_for_run"]


def executor_for_run(
    explicit: Callable[[Intent], Any] | None, own_queue: Callable[[Intent], Any]
) -> Callable[[Intent], Any] | None:
    """What a task run passes as ``airlock.scope(executor=...)``: explicit, else configured, else its own queue.

    A task that runs on a worker and enqueues follow-ups means them for the same
    queue ("is also queued via Celery"), not for an inline call in the worker, so
    the run's own queue is its default, and a choice like an explicit one: nested
    in another scope (a run called in-process), the run's intents still go through
    it. ``None`` when ``airlock.configure(executor=...)`` set one: ``scope()``
    applies it as the default it is, which an enclosing scope's choice overrides.
    Read at each run, so a ``configure()`` made after the task was declared applies.
    """
    if explicit is not None:
        return explicit
    if airlock.get_configuration()["executor"] is not None:
        return None
    return own_queue
