"""The django-q2 executor: queue each intent with ``django_q.tasks.async_task``.

django-q2 takes any importable callable, so unlike the other executors there is
no in-process fallback: every intent becomes a task package on the cluster's
broker, and the task id travels on ``intent_dispatched`` as ``result``.
"""

from __future__ import annotations

import difflib
import sys
import types
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from functools import partial
from typing import Any

try:
    import django_q  # type: ignore[import-untyped]  # noqa: F401  (its modules need Django set up, so they are imported on first use)
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.executors.django_q needs django-q2: pip install 'airlock-dispatch[django-q]'"
    ) from error

from airlock._intent import Intent
from airlock._propagation import inject, is_enabled
from airlock.integrations.django_q import TRACE_KEY, call_task

__all__ = ["DJANGO_Q_OPTIONS", "RESERVED_KWARGS", "check_enqueue", "django_q_executor"]

# The options django-q2's async_task (1.6 to 1.11) moves from its keyword arguments
# into the task package; it keeps them in a local tuple, so they are listed here.
_PACKAGE_OPTIONS = frozenset(
    {
        "hook", "group", "save", "sync", "cached", "ack_failure", "iter_count",
        "iter_cached", "chain", "broker", "cluster", "timeout",
    }
)  # fmt: skip

DJANGO_Q_OPTIONS: frozenset[str] = _PACKAGE_OPTIONS | {"task_name", "q_options"}
"""The ``_dispatch_options`` names :func:`django_q_executor` accepts, as ``async_task``
takes them (``q_options`` may hold any of the others but itself).

.. versionadded:: 0.1
"""

RESERVED_KWARGS: frozenset[str] = DJANGO_Q_OPTIONS | {"func"}
"""Task keyword argument names ``async_task`` would take for itself; a task whose
keyword arguments use one is sent through :func:`~airlock.integrations.django_q.call_task`.

.. versionadded:: 0.1
"""

# The carrier for the package async_task is building: the pre_enqueue receiver
# copies it in, since async_task has no argument for extra package fields.
_outgoing: ContextVar[MutableMapping[str, Any] | None] = ContextVar("airlock.django_q.outgoing", default=None)
_async_task: Callable[..., Any] | None = None


def django_q_executor(intent: Intent) -> Any:
    """Queue the intent with django-q2 and return the task id.

    Sends ``async_task(task, *args, **kwargs, **options)``. The task must be
    importable by the worker (a module-level function, method or callable
    object); a lambda, a function defined inside another or one defined in
    ``__main__`` is refused before anything is queued, and already at
    ``airlock.enqueue()`` (see :func:`check_enqueue`).

    ``_dispatch_options`` are ``async_task``'s own: ``group``, ``hook``, ``timeout``,
    ``cluster``, ``broker``, ``save``, ``cached``, ``sync``, ``ack_failure``,
    ``task_name`` and ``q_options`` (see :data:`DJANGO_Q_OPTIONS`). When a task's
    keyword arguments use one of those names (see :data:`RESERVED_KWARGS`), django-q2
    would take them as options, so the task is sent wrapped:
    ``async_task(call_task, task, args, kwargs, **options)``, and runs unchanged.

    When a tracing integration is on, the trace context goes into the task
    package under :data:`~airlock.integrations.django_q.TRACE_KEY`, where
    :func:`~airlock.integrations.django_q.airlock_task` finds it.

    Raises:
        TypeError: An unknown option, or a task a worker could not import.

    .. versionadded:: 0.1
    """
    send = _async_task or _load()
    task = intent.task
    _check_importable(task, intent)
    options = intent.dispatch_options or {}
    if options:
        _check_options(options, intent)
        if "q_options" in options:
            # async_task pops task_name out of q_options: give it a copy, not the intent's.
            options = {**options, "q_options": dict(options["q_options"])}
    args = intent.args
    kwargs = intent.kwargs
    if not kwargs.keys().isdisjoint(RESERVED_KWARGS):
        args = (task, args, kwargs)
        task = call_task
        kwargs = {}
    if not is_enabled():
        return send(task, *args, **kwargs, **options)
    token = _outgoing.set(inject({}))
    try:
        return send(task, *args, **kwargs, **options)
    finally:
        _outgoing.reset(token)


def _load() -> Callable[..., Any]:
    """Import django-q2's task API (it needs Django's settings) and hook its pre_enqueue."""
    global _async_task
    from django_q.signals import pre_enqueue  # type: ignore[import-untyped]
    from django_q.tasks import async_task  # type: ignore[import-untyped]

    pre_enqueue.connect(_add_carrier, dispatch_uid="airlock.integrations.executors.django_q")
    _async_task = async_task
    return async_task  # type: ignore[no-any-return]


def _add_carrier(sender: Any, task: dict[str, Any], **extra: Any) -> None:
    """django-q2's ``pre_enqueue`` receiver: add the trace carrier to airlock's packages."""
    carrier = _outgoing.get()
    if carrier:
        task[TRACE_KEY] = carrier


def check_enqueue(intent: Intent) -> None:
    """Refuse, at ``airlock.enqueue()``, an intent :func:`django_q_executor` could not queue.

    The executor's ``check_enqueue``: the scope calls it while the caller's
    transaction is still open, so a task no worker could import (a lambda, a
    nested function, one defined in ``__main__``) or an unknown option fails at
    the line that enqueued it, not at the flush after the commit.

    Raises:
        TypeError: The task cannot be imported by a worker, or an option is unknown.

    .. versionadded:: 0.1
    """
    _check_importable(intent.task, intent)
    options = intent.dispatch_options
    if options:
        _check_options(options, intent)


django_q_executor.check_enqueue = check_enqueue  # type: ignore[attr-defined]  # the scope looks it up

# The names a script's module has: in the worker, the same name is its own main module.
_MAIN_MODULES = frozenset({"__main__", "__mp_main__"})


def _check_importable(task: Any, intent: Intent) -> None:
    # django-q2 pickles the function by reference (module and qualified name) and
    # the worker imports it; check that the name leads back to this very function,
    # which is what fails for lambdas, nested functions and shadowed names.
    if isinstance(task, partial):
        task = task.func
    if isinstance(task, types.MethodType):
        owner = task.__self__
        _refuse_main(owner if isinstance(owner, type) else type(owner), intent)
        return
    if not isinstance(task, types.FunctionType):
        _refuse_main(task if isinstance(task, type) else type(task), intent)
        return
    found: Any = sys.modules.get(task.__module__)
    for part in task.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is not task:
        raise TypeError(
            f"django_q_executor cannot queue {intent.name}: a django-q2 worker imports "
            f"the task by its path, and {task.__module__}.{task.__qualname__} does not lead "
            "to it (a lambda, a function defined inside another, or a name since rebound). "
            "Define the task as a module-level function."
        )
    _refuse_main(task, intent)


def _refuse_main(defined: Any, intent: Intent) -> None:
    """Refuse a task (or the class of its object) defined in the script that was run.

    The name leads back to it in this process, but a worker's ``__main__`` is
    django-q2's own: unpickling the package fails there, in the cluster.
    """
    if getattr(defined, "__module__", None) not in _MAIN_MODULES:
        return
    what = getattr(defined, "__qualname__", repr(defined))
    raise TypeError(
        f"django_q_executor cannot queue {intent.name}: {what} is defined in __main__, the "
        "script this process runs, and a django-q2 worker has a __main__ of its own, so it "
        f"could not import it (the cluster would fail on the package). Move {what} into an "
        "importable module (e.g. yourapp/tasks.py) and import it from there."
    )


def _check_options(options: Mapping[str, Any], intent: Intent) -> None:
    unknown = [(repr(name), name) for name in options.keys() - DJANGO_Q_OPTIONS]
    q_options = options.get("q_options")
    if q_options is not None:
        if not isinstance(q_options, Mapping):
            raise TypeError(f"django_q_executor: _dispatch_options['q_options'] must be a dict, got {q_options!r}")
        nested = q_options.keys() - _PACKAGE_OPTIONS - {"task_name"}
        unknown += [(f"q_options[{name!r}]", name) for name in nested]
    if not unknown:
        return
    hints = []
    for label, name in sorted(unknown):
        close = difflib.get_close_matches(str(name), DJANGO_Q_OPTIONS, n=1)
        hints.append(label + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"django_q_executor: unknown _dispatch_options {', '.join(hints)} for {intent.name}; "
        f"async_task takes {', '.join(sorted(DJANGO_Q_OPTIONS))}"
    )
