"""The Huey executor: send each intent as a Huey task.

``huey_executor`` enqueues a Huey task (``@huey.task()``) on its Huey instance
through ``task.schedule(args=..., kwargs=..., **options)``, always, as airlock-py
does, and calls a plain function in-process. ``_dispatch_options`` are checked by
name, so a typo fails loudly instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from huey.api import TaskWrapper  # type: ignore[import-untyped]  # Huey ships no type hints
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("airlock.integrations.executors.huey needs Huey: pip install 'airlock[huey]'") from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._propagation import inject
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["HUEY_OPTIONS", "TRACE_KWARG", "huey_executor"]

HUEY_OPTIONS: frozenset[str] = frozenset(
    {"eta", "delay", "priority", "retries", "retry_delay", "retry_backoff", "expires", "timeout", "id"}
)
"""The ``_dispatch_options`` names :func:`huey_executor` accepts: those of ``TaskWrapper.schedule``.

.. versionadded:: 0.1
"""

TRACE_KWARG = "_airlock_trace"
"""The task keyword that carries the trace context to the worker.

Added only for tasks declared with :func:`airlock.integrations.huey.airlock_task`
(whose wrapper removes it before your function is called), and only while a
tracing integration is instrumented. Other tasks never receive it.

.. versionadded:: 0.1
"""

# Marks the functions airlock_task wraps, so the executor knows they accept TRACE_KWARG.
TASK_RUN_MARK = "__airlock_task_run__"

_SCHEDULING = frozenset({"eta", "delay"})


def huey_executor(intent: Intent) -> Any:
    """Send the intent through Huey and return what Huey hands back.

    - A Huey task: ``task.schedule(args=..., kwargs=..., **options)``. Huey's
      ``schedule()`` refuses a call without ``eta`` or ``delay``, so with neither
      option the executor adds ``delay=0``: the task is queued at once, as calling
      it would queue it. Unlike calling the task, the intent's own keyword
      arguments all reach your function, even ones named ``delay`` or ``priority``.
    - Any other object with a ``schedule`` method (a stand-in in a test):
      ``task.schedule(args=..., kwargs=..., **options)``, with nothing added.
    - A plain callable: called in-process, like the sync executor.

    The return value (Huey's ``Result`` handle, or ``None`` when the Huey instance
    stores no results) travels on ``intent_dispatched`` as ``result``.

    Raises:
        TypeError: An option name Huey's ``schedule()`` does not take, or options
            for a plain function (it runs now, so they could not apply).

    .. versionadded:: 0.1
    """
    task = intent._task
    options = intent.dispatch_options
    if options:
        _check_options(options, intent)
    if not isinstance(task, TaskWrapper):
        schedule = getattr(task, "schedule", None)
        if schedule is None:
            if options:
                raise TypeError(
                    f"huey_executor: {intent.name} is not a Huey task, so it runs in-process "
                    f"now and its _dispatch_options {sorted(options)} cannot apply; "
                    "drop them or enqueue a @huey.task()"
                )
            return sync_executor(intent)
        # A task-like object of another kind: called exactly as airlock-py calls it.
        return schedule(args=intent._args, kwargs=intent._kwargs, **(options or {}))
    kwargs = intent._kwargs
    if hooks.inject_trace is not None and getattr(task.func, TASK_RUN_MARK, False):
        carrier = inject({})
        if carrier:
            kwargs = {**kwargs, TRACE_KWARG: carrier}
    if not options or _SCHEDULING.isdisjoint(options):
        # Huey's schedule() refuses a call with neither; a delay of 0 queues the task now.
        return task.schedule(args=intent._args, kwargs=kwargs, delay=0, **(options or {}))
    return task.schedule(args=intent._args, kwargs=kwargs, **options)


def _check_options(options: Mapping[str, Any], intent: Intent) -> None:
    takes = f"Huey's schedule() takes {', '.join(sorted(HUEY_OPTIONS))}"
    reject_unknown_options("huey_executor", options, HUEY_OPTIONS, intent.name, takes)
