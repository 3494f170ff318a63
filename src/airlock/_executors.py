"""The default executor, which lives in the core because it needs nothing else."""

from __future__ import annotations

from types import CoroutineType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airlock._intent import Intent

__all__ = ["sync_executor"]


def sync_executor(intent: Intent) -> Any:
    """Call the task in this process: ``task(*args, **kwargs)``. The default executor.

    ``_dispatch_options`` are ignored. An ``async def`` task is refused with a
    ``TypeError`` rather than left as a coroutine nobody awaits.

    .. versionadded:: 0.1
    """
    # The private slots: this runs once per intent on the default path.
    task = intent._task
    try:
        result = task(*intent._args, **intent._kwargs)
    except TypeError:
        if callable(task):
            raise
        return _run_task_object(intent)
    if type(result) is CoroutineType:
        result.close()
        raise TypeError(
            f"{intent.name} is an async function; the sync executor calls tasks "
            "synchronously and cannot await it. Enqueue a plain function, or use an "
            "executor that hands the task to a queue."
        )
    return result


def _run_task_object(intent: Intent) -> Any:
    """Run a task object that is not callable itself, in this process."""
    call = getattr(intent.task, "call", None)  # a Django 6 Task runs in-process with .call()
    if callable(call):
        return call(*intent.args, **intent.kwargs)
    raise TypeError(
        f"{intent.name} is a task object that cannot be called in this process, and the sync "
        "executor only calls tasks; dispatch it with its queue's executor (for example "
        "airlock.scope(executor=celery_executor))"
    )
