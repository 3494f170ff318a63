"""The Django Tasks executor: hand each intent to the backend of a ``django.tasks`` task.

``django_tasks_executor`` calls ``task.using(**options).enqueue(*args, **kwargs)``
for a Django ``Task`` (``task.enqueue(...)`` when there are no options) and calls a
plain function in-process. Its enqueue-time check (``check_enqueue``) asks the task's
backend, while the caller's transaction is still open, what Django would otherwise
only refuse at ``enqueue()``, after the commit: an option the backend cannot honour,
a queue it does not list, arguments that do not survive JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from typing import Any

try:
    from django.tasks import Task, task_backends  # type: ignore[import-untyped]  # Django ships no type hints
    from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY  # type: ignore[import-untyped]
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.executors.django_tasks needs Django 6's django.tasks (Python 3.12 or newer): "
        "pip install 'airlock-dispatch[django-tasks]'"
    ) from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent, with_arguments
from airlock._propagation import inject
from airlock.integrations.executors._checks import check_arguments
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["DJANGO_TASKS_OPTIONS", "INTENT_KWARG", "TRACE_KWARG", "django_tasks_executor"]

DJANGO_TASKS_OPTIONS: frozenset[str] = frozenset({"priority", "queue_name", "run_after", "backend"})
"""The ``_dispatch_options`` names :func:`django_tasks_executor` accepts: those of ``Task.using()``.

.. versionadded:: 0.1
"""

TRACE_KWARG = "_airlock_trace"
"""The task keyword that carries the trace context to the worker.

Added only for tasks declared with :func:`airlock.integrations.django_tasks.airlock_task`
(whose wrapper removes it before your function is called), and only while a tracing
integration is instrumented: Django's tasks carry their arguments and nothing else,
so other tasks never receive it and their runs start traces of their own.

.. versionadded:: 0.1
"""

INTENT_KWARG = "_airlock_intent_id"
"""The task keyword that carries an outbox row's intent id to the worker.

``django.tasks`` backends choose their own result ids (``Backend.enqueue`` takes no
id), so the intent id cannot be the ``TaskResult`` id. The outbox adds this keyword
only for tasks declared with :func:`airlock.integrations.django_tasks.airlock_task`,
whose wrapper removes it and exposes it to
:func:`airlock.integrations.django.outbox.deduplicate` for the length of the call.

.. versionadded:: 0.1
"""

# The intent id of the airlock_task run going on in this context (None inside a run
# that has none), read by the outbox's deduplicate. Every run sets it, so a task run
# in-process inside another never sees the outer run's id.
running_intent: ContextVar[str | None] = ContextVar("airlock.django_tasks.intent_id", default=None)

# Marks the functions airlock_task wraps, so the executor knows they accept TRACE_KWARG.
TASK_RUN_MARK = "__airlock_task_run__"

# Set while the executor hands a task to its backend, so an AirlockBackend lets
# that enqueue through to the real backend instead of holding it again.
passthrough: ContextVar[bool] = ContextVar("airlock.django_tasks.passthrough", default=False)


def django_tasks_executor(intent: Intent) -> Any:
    """Enqueue the intent on its task's backend and return the ``TaskResult``.

    - A Django ``Task``: ``task.using(**options).enqueue(*args, **kwargs)``, or
      ``task.enqueue(*args, **kwargs)`` without options. The ``TaskResult`` travels
      on ``intent_dispatched`` as ``result``.
    - A plain callable: called in-process, like the sync executor.

    ``_dispatch_options`` are those of ``Task.using()``: ``priority``, ``queue_name``,
    ``run_after`` and ``backend`` (see :data:`DJANGO_TASKS_OPTIONS`). They are
    checked at enqueue against the backend that will receive the task (see
    :func:`check_enqueue`).

    Raises:
        TypeError: An unknown option, or options for a plain function.

    .. versionadded:: 0.1
    """
    task = intent._task
    if not isinstance(task, Task):
        if intent.dispatch_options:
            raise _not_a_task(intent)
        return sync_executor(intent)
    options = intent.dispatch_options
    if options:
        if not options.keys() <= DJANGO_TASKS_OPTIONS:
            _check_names(options, intent)
        task = task.using(**options)
    kwargs = intent._kwargs
    if hooks.inject_trace is not None and getattr(task.func, TASK_RUN_MARK, False):
        carrier = inject({})
        if carrier:
            kwargs = {**kwargs, TRACE_KWARG: carrier}
    token = passthrough.set(True)
    try:
        result = task.enqueue(*intent._args, **kwargs)
    finally:
        passthrough.reset(token)
    origin = intent.origin
    if origin is not None and hasattr(origin, "_reached_backend"):
        origin._reached_backend(result)
    return result


def check_enqueue(intent: Intent) -> Intent | None:
    """Refuse, at enqueue, what the task's backend would only refuse after the commit.

    Checks the option names and the arguments against the function's signature
    (after the ``context`` of a ``takes_context`` task), then asks the backend that
    will receive the task (``backend=`` if given, else the task's own): ``run_after`` needs
    ``supports_defer``, a non-default ``priority`` needs ``supports_priority``, the
    ``queue_name`` must be among its ``QUEUES``, and the arguments must be JSON
    (strings as dict keys, finite floats). Returns the intent with its arguments
    copied as the backend will store them, so changing a list after the enqueue
    cannot change what is sent.

    Raises:
        TypeError: An unknown option or an argument JSON cannot hold.
        ValueError: An option the backend cannot honour, or an unknown backend alias.

    .. versionadded:: 0.1
    """
    task = intent._task
    options = intent.dispatch_options
    if not isinstance(task, Task):
        if options:
            raise _not_a_task(intent)
        return None
    if options:
        _check_names(options, intent)
        _check_options(task, options, intent)
    # The worker calls task.func(*args, **kwargs), with a TaskContext first for takes_context.
    check_arguments("django_tasks_executor", intent, partial(task.func, None) if task.takes_context else task.func)
    args, kwargs = intent._args, intent._kwargs
    plain = _PLAIN
    if all(type(value) in plain for value in args) and all(type(value) in plain for value in kwargs.values()):
        return None  # the common case: ids and names, which JSON keeps and nobody can change
    return with_arguments(intent, tuple(json_copy(args, "args", intent)), json_copy(kwargs, "kwargs", intent))


django_tasks_executor.check_enqueue = check_enqueue  # type: ignore[attr-defined]


def _not_a_task(intent: Intent) -> TypeError:
    return TypeError(
        f"django_tasks_executor: {intent.name} is not a django.tasks Task, so it runs in-process now and "
        f"its _dispatch_options {sorted(intent.dispatch_options or ())} cannot apply; drop them or "
        "enqueue a function decorated with @django.tasks.task"
    )


def _check_names(options: Mapping[str, Any], intent: Intent) -> None:
    takes = f"Task.using() takes {', '.join(sorted(DJANGO_TASKS_OPTIONS))}"
    reject_unknown_options("django_tasks_executor", options, DJANGO_TASKS_OPTIONS, intent.name, takes)


def _check_options(task: Any, options: Mapping[str, Any], intent: Intent) -> None:
    alias = options.get("backend") or task.backend
    try:
        backend = task_backends[alias]
    except InvalidTaskBackend as error:
        raise ValueError(
            f"django_tasks_executor: {intent.name} names backend {alias!r}, which settings.TASKS lacks "
            f"({', '.join(map(repr, task_backends.settings))} are configured)"
        ) from error
    where = f"django_tasks_executor: {intent.name} on backend {alias!r} ({type(backend).__name__})"
    run_after = options.get("run_after")
    if run_after is not None:
        if not backend.supports_defer:
            raise ValueError(
                f"{where} cannot take run_after: the backend does not support deferred tasks "
                "(supports_defer is False); drop run_after or use a backend that defers, such as "
                "django_tasks_db.DatabaseBackend"
            )
        if not isinstance(run_after, datetime):
            raise TypeError(f"{where}: run_after must be a datetime, got {run_after!r}")
    priority = options.get("priority")
    if priority is not None:
        if not backend.supports_priority and priority != task.priority:
            raise ValueError(
                f"{where} cannot take priority={priority!r}: the backend does not support priorities "
                "(supports_priority is False); drop priority or use a backend that has them"
            )
        if type(priority) is not int or not TASK_MIN_PRIORITY <= priority <= TASK_MAX_PRIORITY:
            raise ValueError(
                f"{where}: priority must be a whole number from {TASK_MIN_PRIORITY} to {TASK_MAX_PRIORITY}, "
                f"got {priority!r}"
            )
    queue_name = options.get("queue_name")
    if queue_name is not None and backend.queues and queue_name not in backend.queues:
        raise ValueError(
            f"{where} has no queue {queue_name!r}: its QUEUES are {', '.join(map(repr, sorted(backend.queues)))}; "
            f"use one of them or add {queue_name!r} to settings.TASKS[{alias!r}]['QUEUES']"
        )
    # Whatever else the backend refuses (a naive run_after with USE_TZ, ...), it
    # refuses in using(), which runs its validate_task: ask it now.
    try:
        task.using(**options)
    except InvalidTask as error:
        raise ValueError(f"{where}: {error}") from error


_PLAIN = frozenset({str, int, bool, type(None)})


class _Unfit(Exception):
    """Raised inside :func:`_copy` for a value JSON cannot hold; ``path`` is filled in on the way out."""

    def __init__(self, value: Any, what: str) -> None:
        self.value = value
        self.what = what
        self.path: list[str] = []


def json_copy(value: Any, path: str, intent: Intent) -> Any:
    """A copy of ``value`` as JSON holds it (tuples become lists, as Django does; a
    ``str``/``int``/``float`` subclass becomes the plain value), or ``TypeError`` naming
    the first part that JSON would lose or change (``args[1]['when']``)."""
    try:
        return _copy(value)
    except _Unfit as unfit:
        where = path + "".join(reversed(unfit.path))
        raise _not_json(intent, where, unfit.value, unfit.what) from None


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise _Unfit(value, "a float JSON cannot hold (NaN or infinity)")
        return value
    if kind is list or kind is tuple:
        copied_items = []
        for n, item in enumerate(value):
            try:
                copied_items.append(_copy(item))
            except _Unfit as unfit:
                unfit.path.append(f"[{n}]")
                raise
        return copied_items
    if kind is dict or isinstance(value, Mapping):
        copied = {}
        for key, item in value.items():
            if type(key) is not str:
                bad_key = _Unfit(key, "a dict key that is not a string (JSON keys are)")
                bad_key.path.append(f"[{key!r}]")
                raise bad_key
            try:
                copied[key] = _copy(item)
            except _Unfit as unfit:
                unfit.path.append(f"[{key!r}]")
                raise
        return copied
    # A subclass (a TextChoices or IntEnum member): JSON keeps the plain value, which
    # compares equal to it; send that, as Django's own normalize_json would.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _copy(float(value))
    raise _Unfit(value, f"a {kind.__module__}.{kind.__qualname__}")


def _not_json(intent: Intent, path: str, value: Any, what: str) -> TypeError:
    return TypeError(
        f"django_tasks_executor: {intent.name}'s {path} = {value!r} is {what}; Django's task backends "
        "store arguments as JSON, so the task would not receive it as given. Pass plain JSON values "
        "(str, int, float, bool, None, list, dict with str keys), e.g. an id instead of an object, "
        "or an ISO string instead of a datetime"
    )
