"""The Huey executor: send each intent as a Huey task.

``huey_executor`` enqueues a Huey task (``@huey.task()``) on its Huey instance
through ``task.schedule(args=..., kwargs=..., **options)``, always, as airlock-py
does, and calls a plain function in-process. ``_dispatch_options`` are checked by
name, so a typo fails loudly instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

try:
    from huey.api import TaskWrapper  # type: ignore[import-untyped]  # Huey ships no type hints
    from huey.serializer import Serializer  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("airlock.integrations.executors.huey needs Huey: pip install 'airlock-dispatch[huey]'") from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._propagation import inject
from airlock.integrations.executors import _deadline
from airlock.integrations.executors._checks import check_arguments, is_plain, snapshot
from airlock.integrations.executors._deadline import DEFAULT_PUBLISH_TIMEOUT
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["HUEY_OPTIONS", "TRACE_KWARG", "huey_executor", "make_huey_executor"]

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

    Each publish to a Redis storage waits at most about
    :data:`DEFAULT_PUBLISH_TIMEOUT` seconds (see :func:`make_huey_executor`).

    Raises:
        TypeError: An option name Huey's ``schedule()`` does not take, or options
            for a plain function (it runs now, so they could not apply).

    .. versionadded:: 0.1
    """
    return _dispatch(intent, DEFAULT_PUBLISH_TIMEOUT)


def make_huey_executor(*, timeout: float = DEFAULT_PUBLISH_TIMEOUT) -> Callable[[Intent], Any]:
    """A :func:`huey_executor` whose publishes give up after ``timeout`` seconds.

    The bound is set on the connection pool of the task's Huey storage (Redis
    storages), the first time the executor sends to it: connect and socket
    timeouts and no retries. The socket timeout adds the storage's
    ``read_timeout`` when it blocks, so that a consumer in the same process can
    still wait on its queue. After a storage cannot be reached, the other intents
    of the flush for it fail at once
    (see :class:`~airlock.integrations.executors.BrokerUnavailableError`).

    Args:
        timeout: Seconds, above 0.

    Raises:
        ValueError: ``timeout`` is not a positive number.

    .. versionadded:: 0.1
    """
    return _deadline.with_timeout(_dispatch, timeout, "make_huey_executor", huey_executor)


def _dispatch(intent: Intent, timeout: float) -> Any:
    task = intent._task
    options = intent.dispatch_options
    if options:
        _check_options(options, intent)
    if not isinstance(task, TaskWrapper):
        schedule = getattr(task, "schedule", None)
        if schedule is None:
            if options:
                _refuse_options(intent, options)
            return sync_executor(intent)
        # A task-like object of another kind: called exactly as airlock-py calls it.
        return schedule(args=intent._args, kwargs=intent._kwargs, **(options or {}))
    kwargs = intent._kwargs
    if hooks.inject_trace is not None and getattr(task.func, TASK_RUN_MARK, False):
        carrier = inject({})
        if carrier:
            kwargs = {**kwargs, TRACE_KWARG: carrier}
    storage = task.huey.storage
    pool = getattr(storage, "pool", None)
    if pool is None or not hasattr(pool, "connection_kwargs"):
        return _enqueue(task, intent, kwargs, options)  # not Redis: nothing to bound
    timeout = _deadline.timeout_for(timeout)
    _deadline.bound_redis_pool(pool, timeout, reading=storage.read_timeout if storage.blocking else 0.0)
    return _deadline.guarded(
        storage, timeout, intent.name, lambda: _enqueue(task, intent, kwargs, options), _is_unreachable
    )


def _enqueue(task: Any, intent: Intent, kwargs: dict[str, Any], options: Mapping[str, Any] | None) -> Any:
    if not options or _SCHEDULING.isdisjoint(options):
        # Huey's schedule() refuses a call with neither; a delay of 0 queues the task now.
        return task.schedule(args=intent._args, kwargs=kwargs, delay=0, **(options or {}))
    return task.schedule(args=intent._args, kwargs=kwargs, **options)


def _check_at_enqueue(intent: Intent) -> Intent | None:
    """``huey_executor.check_enqueue``: options, arguments and their snapshot, at enqueue.

    The arguments must fit the task's function (``task=`` counts as given for a
    ``context=True`` task) and survive the Huey instance's serializer (pickle
    by default); what comes back from it is what is sent.
    """
    task = intent._task
    options = intent.dispatch_options
    if options:
        _check_options(options, intent)
    if not isinstance(task, TaskWrapper):
        if options and getattr(task, "schedule", None) is None:
            _refuse_options(intent, options)
        return None
    check_arguments("huey_executor", intent, task.func, injected=("task",) if task.context else ())
    if is_plain(intent):
        return None
    serializer = task.huey.serializer
    kind = "pickle" if type(serializer) is Serializer else type(serializer).__name__
    return snapshot(
        "huey_executor", intent, lambda data: serializer.deserialize(serializer.serialize(data)), kind, task.func
    )


huey_executor.check_enqueue = _check_at_enqueue  # type: ignore[attr-defined]


def _refuse_options(intent: Intent, options: Mapping[str, Any]) -> None:
    raise TypeError(
        f"huey_executor: {intent.name} is not a Huey task, so it runs in-process "
        f"now and its _dispatch_options {sorted(options)} cannot apply; "
        "drop them or enqueue a @huey.task()"
    )


def _check_options(options: Mapping[str, Any], intent: Intent) -> None:
    takes = f"Huey's schedule() takes {', '.join(sorted(HUEY_OPTIONS))}"
    reject_unknown_options("huey_executor", options, HUEY_OPTIONS, intent.name, takes)


def _is_unreachable(error: BaseException) -> bool:
    return _deadline.any_cause(error, _CONNECTION_ERRORS)


def _connection_errors() -> tuple[type[BaseException], ...]:
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - Huey without Redis
        return (OSError,)
    return (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


_CONNECTION_ERRORS = _connection_errors()
