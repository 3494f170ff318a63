"""Huey integration: a task whose run is an airlock scope.

Declare the task with :func:`airlock_task` instead of ``huey.task``::

    @airlock_task(huey, retries=2)
    def process_order(order_id):
        ...
        airlock.enqueue(send_email, order_id=order_id)  # goes out after a successful run

The scope is a wrapper around your function, not a pair of Huey hooks. Hooks
(``pre_execute``/``post_execute``) would apply to every task of the Huey
instance, and a scope entered in a ``pre_execute`` hook is left open in the
worker thread whenever another hook cancels the task or the worker is
interrupted, after which every later task would nest in it. A wrapper opens and
closes its scope with the function call itself, in the same thread, whatever
happens; it also works in Huey's immediate mode.

Follow-up Huey tasks go out as Huey tasks of their own (``huey_executor``) by
default. To send them another way, pass ``executor=`` to :func:`airlock_task` or
configure one (``airlock.configure(executor=...)``); ``executor=`` wins.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from huey.api import Huey, TaskWrapper  # type: ignore[import-untyped]  # Huey ships no type hints
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("airlock.integrations.huey needs Huey: pip install 'airlock-dispatch[huey]'") from error

import airlock
from airlock._propagation import continue_trace
from airlock.integrations._task_run import executor_for_run
from airlock.integrations.executors.huey import TASK_RUN_MARK, TRACE_KWARG, huey_executor

if TYPE_CHECKING:
    from airlock._intent import Intent
    from airlock.typing import Policy

__all__ = ["TRACE_KWARG", "airlock_task", "huey_executor"]


def airlock_task(
    huey: Huey,
    *,
    policy: Policy | None = None,
    executor: Callable[[Intent], Any] | None = None,
    **task_settings: Any,
) -> Callable[[Callable[..., Any]], TaskWrapper]:
    """Declare a Huey task whose every run is an airlock scope.

    Use it where you would write ``@huey.task(...)``; ``task_settings`` are
    passed on to ``huey.task()`` unchanged (``retries``, ``retry_delay``,
    ``priority``, ``context``, ``name``, ...).

    The scope flushes when the function returns and is discarded when it
    raises, including ``RetryTask`` and ``CancelExecution``: a run that will be
    retried sends nothing, and the retry starts with a fresh scope. The flush
    happens inside the run, so a follow-up that cannot be sent makes the run
    fail (and retry, if it has retries), rather than being lost quietly.

    Args:
        huey: The Huey instance to register the task with.
        policy: The scope's policy (default: ``airlock.configure(policy=...)``).
        executor: How follow-ups go out (default: ``airlock.configure(executor=...)``,
            else ``huey_executor``).
        **task_settings: Passed to ``huey.task()``.

    Returns:
        A decorator that returns Huey's ``TaskWrapper``, as ``huey.task()`` does.

    .. versionadded:: 0.1
    """

    def decorate(fn: Callable[..., Any]) -> TaskWrapper:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"airlock_task: {fn.__qualname__} is an async function, and Huey runs tasks "
                "synchronously; wrap the coroutine with asyncio.run() in a regular function"
            )
        name = task_settings.get("name") or fn.__name__

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            carrier = kwargs.pop(TRACE_KWARG, None)
            with (
                continue_trace(carrier, name=name, system="huey"),
                airlock.scope(policy, executor=executor_for_run(executor, huey_executor)),
            ):
                return fn(*args, **kwargs)

        setattr(run, TASK_RUN_MARK, True)
        return huey.task(**task_settings)(run)

    return decorate
