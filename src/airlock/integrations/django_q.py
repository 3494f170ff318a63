"""django-q2: a task's run is a scope.

Decorate a task function with :func:`airlock_task`. When a django-q2 worker runs
it, the run is an airlock scope: intents the task enqueues are held until it
returns, then queued as django-q2 tasks of their own
(:func:`~airlock.integrations.executors.django_q.django_q_executor`), so follow-up
tasks are queued only when this one succeeded; if it raises, they are discarded.
``executor=`` on the decorator, else ``airlock.configure(executor=...)``
(``settings.AIRLOCK["EXECUTOR"]``), sends them another way. The run also
continues the trace of the code that enqueued it.

The decorated function is still the function django-q2 imports and calls
(``async_task("shop.tasks.process_order", 7)`` and schedules work as before),
and calling it directly, outside a worker, also runs it in a scope.

Where the trace comes from: ``django_q_executor`` writes the trace context into
the task package under the key :data:`TRACE_KEY`; django-q2 hands the package to
its ``pre_execute`` signal in the worker, where a receiver keeps it for the
decorated function that is about to run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from inspect import iscoroutinefunction
from typing import Any, TypeVar, overload

try:
    import django_q  # type: ignore[import-untyped]  # noqa: F401  (only its presence is checked here; its modules need Django set up)
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.django_q needs django-q2: pip install 'airlock-dispatch[django-q]'"
    ) from error

import airlock
from airlock._intent import Intent, task_name
from airlock._propagation import continue_trace
from airlock.integrations._task_run import executor_for_run
from airlock.typing import Policy

__all__ = ["TRACE_KEY", "airlock_task", "call_task"]

F = TypeVar("F", bound=Callable[..., Any])

TRACE_KEY = "airlock_trace"
"""The key of the task package (the dict django-q2 signs and queues) that holds the
trace context, as :func:`airlock._propagation.inject` wrote it.

.. versionadded:: 0.1
"""

# What the worker is about to call, and the trace carrier of its package: set by
# the pre_execute receiver, claimed (once) by the decorated function it names, so a
# decorated function called directly from inside another task's run gets no carrier.
_running: ContextVar[tuple[Any, Mapping[str, Any] | None] | None] = ContextVar("airlock.django_q.running", default=None)
_receiver_connected = False


@overload
def airlock_task(func: F, /) -> F: ...


@overload
def airlock_task(
    *,
    policy: Policy | None = None,
    executor: Callable[[Intent], Any] | None = None,
    **scope_kwargs: Any,
) -> Callable[[F], F]: ...


def airlock_task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    policy: Policy | None = None,
    executor: Callable[[Intent], Any] | None = None,
    **scope_kwargs: Any,
) -> Any:
    """Make each run of a django-q2 task function an airlock scope.

    Use it bare (``@airlock_task``) or with the arguments of :func:`airlock.scope`
    (``@airlock_task(policy=BlockTasks({"charge"}))``). Each run opens a fresh scope:
    a normal return flushes it, an exception discards it (and django-q2 records the
    failure as usual). Arguments not given come from :func:`airlock.configure`, as
    for any scope, except that with no executor given or configured the follow-ups
    are queued with ``django_q_executor``, the queue the task itself came from.

    The run continues the trace found in the task package (see :data:`TRACE_KEY`),
    when a tracing integration is on.

    Args:
        func: The task function (when used bare).
        policy: The scope's policy.
        executor: The scope's executor (default: ``airlock.configure(executor=...)``,
            else ``django_q_executor``).
        **scope_kwargs: Passed on to :func:`airlock.scope`.

    Returns:
        The decorated function (or a decorator). django-q2 imports it by the
        same dotted path as the undecorated one.

    Raises:
        TypeError: ``func`` is an ``async def`` function, which django-q2's workers
            do not await.

    .. versionadded:: 0.1
    """

    def decorate(func: F) -> F:
        if iscoroutinefunction(func):
            raise TypeError(
                f"@airlock_task cannot wrap {func.__qualname__}: it is an async function, "
                "and django-q2 workers call tasks synchronously"
            )
        _connect_receiver()
        name = task_name(func)
        # Imported here: the executor's module imports this one.
        from airlock.integrations.executors.django_q import django_q_executor

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with continue_trace(_claim(run), name=name, system="django_q"):
                chosen = executor_for_run(executor, django_q_executor)
                with airlock.scope(policy, executor=chosen, **scope_kwargs):
                    return func(*args, **kwargs)

        return run  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def call_task(task: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``task(*args, **kwargs)`` in a worker: the task package's function when
    a task's keyword arguments carry a name django-q2 keeps for itself.

    ``async_task`` takes ``group``, ``timeout``, ``hook``, ``task_name``, ... out of
    the keyword arguments as options, so ``django_q_executor`` sends such a task as
    ``async_task(call_task, task, args, kwargs, **options)`` and its keyword
    arguments arrive untouched. The trace carrier is handed on to ``task``.

    .. versionadded:: 0.1
    """
    running = _running.get()
    carrier = running[1] if running is not None and running[0] is call_task else None
    token = _running.set((task, carrier))
    try:
        return task(*args, **kwargs)
    finally:
        _running.reset(token)


def _claim(run: Callable[..., Any]) -> Mapping[str, Any] | None:
    """The trace carrier of the package the worker is running, if it is ``run``'s."""
    running = _running.get()
    if running is None or running[0] is not run:
        return None
    _running.set(None)
    return running[1]


def _remember_task(sender: Any, func: Any = None, task: Any = None, **extra: Any) -> None:
    """django-q2's ``pre_execute`` receiver: note what the worker is about to call."""
    carrier = task.get(TRACE_KEY) if isinstance(task, Mapping) else None
    _running.set((func, carrier))


def _connect_receiver() -> None:
    # django_q.signals imports django_q's models, which need Django's app registry:
    # connect when the first task is decorated (task modules load after it), not at import.
    global _receiver_connected
    if _receiver_connected:
        return
    from django_q.signals import pre_execute  # type: ignore[import-untyped]

    pre_execute.connect(_remember_task, dispatch_uid="airlock.integrations.django_q")
    _receiver_connected = True
