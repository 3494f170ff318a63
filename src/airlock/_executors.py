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
    result = intent._task(*intent._args, **intent._kwargs)
    if type(result) is CoroutineType:
        result.close()
        raise TypeError(
            f"{intent.name} is an async function; the sync executor calls tasks "
            "synchronously and cannot await it. Enqueue a plain function, or use an "
            "executor that hands the task to a queue."
        )
    return result
