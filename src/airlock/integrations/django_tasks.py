"""Django's tasks framework (``django.tasks``, Django 6): task-run scopes and ``AirlockBackend``.

Three parts, each usable alone:

- :func:`~airlock.integrations.executors.django_tasks.django_tasks_executor` sends
  intents whose task is a Django ``Task`` to that task's backend.
- **A task's run is a scope.** While :func:`connect` is in effect (the airlock
  Django app calls it at start-up, and so does every ``AirlockBackend``), each run
  of a ``django.tasks`` task is an airlock scope, opened on Django's
  ``task_started`` signal and closed on ``task_finished``: a successful run
  flushes it, a failed one discards it. Follow-ups go through
  ``django_tasks_executor`` unless ``airlock.configure(executor=...)`` chose
  another. :func:`airlock_task` declares a task whose scope is instead a wrapper
  around the function, with its own policy and executor and the caller's trace.
- :class:`AirlockBackend` is a ``TASKS`` backend wrapping a real one, so that
  existing ``my_task.enqueue()`` calls inside a scope become intents, with no code
  change, and wait for the commit like ``airlock.enqueue(my_task)`` would.

See ``docs/django_tasks.md``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

try:
    from django.tasks import TaskResult, TaskResultStatus  # type: ignore[import-untyped]
    from django.tasks import task as django_task
    from django.tasks.backends.base import BaseTaskBackend  # type: ignore[import-untyped]
    from django.tasks.exceptions import InvalidTaskBackend  # type: ignore[import-untyped]
    from django.tasks.signals import task_finished, task_started  # type: ignore[import-untyped]
    from django.utils.module_loading import import_string  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.django_tasks needs Django 6's django.tasks (Python 3.12 or newer): "
        "pip install 'airlock-dispatch[django-tasks]'"
    ) from error

import airlock
from airlock._policies import checks_on_enqueue
from airlock._propagation import continue_trace
from airlock._scope import Scope
from airlock.integrations._observe import system_of
from airlock.integrations._task_run import executor_for_run
from airlock.integrations.executors.django_tasks import (
    INTENT_KWARG,
    TASK_RUN_MARK,
    TRACE_KWARG,
    django_tasks_executor,
    passthrough,
    running_intent,
)

if TYPE_CHECKING:
    from airlock._intent import Intent
    from airlock.typing import Policy

__all__ = [
    "TRACE_KWARG",
    "AirlockBackend",
    "AirlockTaskResult",
    "airlock_task",
    "connect",
    "disconnect",
    "django_tasks_executor",
]

_SYSTEM = "django_tasks"


# -- a task's run is a scope -------------------------------------------------------

# The runs the task_started receiver opened in this context and task_finished has
# not closed yet, innermost last: (task result id, its scope, the intent id of the run
# around it). A tuple, replaced whole.
_open_runs: ContextVar[tuple[tuple[str, Scope, str | None], ...]] = ContextVar("airlock.django_tasks.runs", default=())
_DISPATCH_UID = "airlock.integrations.django_tasks"


def _run_started(sender: Any, task_result: Any, **extra: Any) -> None:
    """``task_started`` receiver: open the run's scope (unless ``airlock_task`` wraps it)."""
    if getattr(task_result.task.func, TASK_RUN_MARK, False):
        return
    scope = airlock.scope(executor=executor_for_run(None, django_tasks_executor)).enter()
    # A task run in-process inside an airlock_task run has no intent id of its own.
    around = running_intent.get()
    if around is not None:
        running_intent.set(None)
    _open_runs.set((*_open_runs.get(), (task_result.id, scope, around)))


def _run_finished(sender: Any, task_result: Any, **extra: Any) -> None:
    """``task_finished`` receiver: flush the run's scope if it succeeded, else discard it."""
    runs = _open_runs.get()
    for position in range(len(runs) - 1, -1, -1):
        if runs[position][0] == task_result.id:
            break
    else:
        return  # not opened here: a decorated task, or a run that started before connect()
    _, scope, around = runs[position]
    _open_runs.set(runs[:position] + runs[position + 1 :])
    if around is not None:
        running_intent.set(around)
    scope.exit()
    if task_result.status == TaskResultStatus.SUCCESSFUL:
        scope.flush()
    else:
        # Django sends task_finished from inside its exception handler.
        scope.discard(sys.exc_info()[1])


def connect() -> None:
    """Make every run of a ``django.tasks`` task an airlock scope, from now on.

    Connects receivers to Django's ``task_started`` and ``task_finished``; calling
    it again changes nothing. The airlock Django app calls it at start-up on
    Django 6, and every :class:`AirlockBackend` does when it is built.

    .. versionadded:: 0.1
    """
    task_started.connect(_run_started, dispatch_uid=_DISPATCH_UID)
    task_finished.connect(_run_finished, dispatch_uid=_DISPATCH_UID)


def disconnect() -> None:
    """Undo :func:`connect`: later runs are no longer scopes (decorated ones still are).

    .. versionadded:: 0.1
    """
    task_started.disconnect(dispatch_uid=_DISPATCH_UID)
    task_finished.disconnect(dispatch_uid=_DISPATCH_UID)


def airlock_task(
    function: Callable[..., Any] | None = None,
    /,
    *,
    policy: Policy | None = None,
    executor: Callable[[Intent], Any] | None = None,
    **task_settings: Any,
) -> Any:
    """Declare a ``django.tasks`` task whose every run is an airlock scope of its own.

    Use it where you would write ``@task(...)``; ``task_settings`` go to
    ``django.tasks.task()`` unchanged (``priority``, ``queue_name``, ``backend``,
    ``takes_context``). The scope is a wrapper around your function: it flushes
    when the function returns and is discarded when it raises, and since it
    flushes inside the run, a follow-up that cannot be sent fails the run. With a
    tracing integration on, the run continues the trace of the code that enqueued
    it (the context travels as the :data:`TRACE_KWARG` keyword, which the wrapper
    removes). Sent through the outbox, the run also receives its intent id (the
    :data:`~airlock.integrations.executors.django_tasks.INTENT_KWARG` keyword, removed
    too), which :func:`~airlock.integrations.django.outbox.deduplicate` reads. The
    ``task_started`` receivers leave these tasks to their wrapper. An
    ``async def`` task's scope flushes through ``sync_to_async``, off the event loop.

    Args:
        function: The task function (when used bare, ``@airlock_task``).
        policy: The scope's policy (default: ``airlock.configure(policy=...)``).
        executor: How follow-ups go out (default: ``airlock.configure(executor=...)``,
            else ``django_tasks_executor``).
        **task_settings: Passed to ``django.tasks.task()``.

    Returns:
        The Django ``Task`` (or a decorator making one).

    .. versionadded:: 0.1
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        name = fn.__name__
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                carrier = kwargs.pop(TRACE_KWARG, None)
                intent_id = kwargs.pop(INTENT_KWARG, None)
                with continue_trace(carrier, name=name, system=_SYSTEM):
                    scope = airlock.scope(policy, executor=executor_for_run(executor, django_tasks_executor)).enter()
                    token = running_intent.set(intent_id)
                    try:
                        result = await fn(*args, **kwargs)
                    except BaseException as error:
                        scope.exit()
                        scope.discard(error)
                        raise
                    finally:
                        running_intent.reset(token)
                    scope.exit()
                    if scope.intents:
                        # Sending may touch the database, which Django forbids on an event loop.
                        await sync_to_async(scope.flush)()
                    else:
                        scope.flush()
                    return result

            run: Callable[..., Any] = run_async
        else:

            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any) -> Any:
                carrier = kwargs.pop(TRACE_KWARG, None)
                intent_id = kwargs.pop(INTENT_KWARG, None)
                with continue_trace(carrier, name=name, system=_SYSTEM):
                    with airlock.scope(policy, executor=executor_for_run(executor, django_tasks_executor)):
                        # Only for the call: follow-ups the scope flushes (and runs, on an
                        # in-process backend) after it are not this intent.
                        token = running_intent.set(intent_id)
                        try:
                            return fn(*args, **kwargs)
                        finally:
                            running_intent.reset(token)

        setattr(run, TASK_RUN_MARK, True)
        return django_task(**task_settings)(run)

    if function is not None:
        return decorate(function)
    return decorate


# -- AirlockBackend ------------------------------------------------------------------

_ENTRY_KEYS = ("BACKEND", "QUEUES", "OPTIONS")
# airlock's own executors other than django_tasks_executor: none hands a Django Task
# to its backend (the sync executor would run it in this process).
_CANNOT_SEND = frozenset({"sync", "celery", "huey", "dramatiq", "django_q"})


@dataclass(frozen=True, slots=True, kw_only=True, weakref_slot=True)
class AirlockTaskResult(TaskResult):  # type: ignore[misc]
    """What ``task.enqueue()`` returns when :class:`AirlockBackend` holds the task for a scope.

    A ``TaskResult`` whose ``id`` is known at once (airlock's own, not the real
    backend's). Until the task reaches the real backend, ``status`` is ``READY``,
    ``enqueued_at`` is ``None``, :attr:`is_sent` is ``False`` and :meth:`refresh`
    changes nothing, since nothing is stored anywhere yet. If the scope is
    discarded or its transaction rolls back, it stays that way. Once the task
    reaches the backend, :attr:`task_result` holds the real ``TaskResult``, the
    handle takes on its state, and :meth:`refresh` reloads from the backend.

    .. versionadded:: 0.1
    """

    _sent: Any = field(init=False, default=None)

    @classmethod
    def _held(cls, task: Any, id: str, args: list[Any], kwargs: dict[str, Any], backend: str) -> AirlockTaskResult:
        """A handle for a task just held; the arguments are already as JSON holds them.

        Filled in slot by slot, as Django fills its own results: the dataclass's
        ``__init__`` would normalize the arguments again, which costs more than the
        rest of the hold.
        """
        handle = object.__new__(cls)
        fill = object.__setattr__
        fill(handle, "task", task)
        fill(handle, "id", id)
        fill(handle, "status", TaskResultStatus.READY)
        for name in ("enqueued_at", "started_at", "finished_at", "last_attempted_at", "_return_value", "_sent"):
            fill(handle, name, None)
        fill(handle, "args", args)
        fill(handle, "kwargs", kwargs)
        fill(handle, "backend", backend)
        fill(handle, "errors", [])
        fill(handle, "worker_ids", [])
        return handle

    @property
    def is_sent(self) -> bool:
        """Whether the task has reached the real backend."""
        return self._sent is not None

    @property
    def task_result(self) -> Any:
        """The real backend's ``TaskResult`` (its id is the backend's), or ``None`` before."""
        return self._sent

    def _take_state_of(self, result: Any) -> None:
        for name in ("status", "enqueued_at", "started_at", "finished_at", "last_attempted_at"):
            object.__setattr__(self, name, getattr(result, name))
        object.__setattr__(self, "errors", result.errors)
        object.__setattr__(self, "worker_ids", result.worker_ids)
        object.__setattr__(self, "_return_value", result._return_value)

    def refresh(self) -> None:
        """Reload from the real backend; before the task reaches it, do nothing."""
        if self._sent is not None:
            self._sent.refresh()
            self._take_state_of(self._sent)

    async def arefresh(self) -> None:
        """See :meth:`refresh`."""
        if self._sent is not None:
            await self._sent.arefresh()
            self._take_state_of(self._sent)

    def __repr__(self) -> str:
        where = f"sent as {self._sent.id}" if self._sent is not None else "held for its scope"
        return f"<AirlockTaskResult {self.id} {self.task.name} {where}>"


class _Held:
    """An intent's origin when AirlockBackend held it: the handle to update once it is sent."""

    __slots__ = ("alias", "handle")

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.handle: AirlockTaskResult | None = None

    def _reached_backend(self, result: Any) -> None:
        handle = self.handle
        if handle is not None and isinstance(result, TaskResult):
            object.__setattr__(handle, "_sent", result)
            handle._take_state_of(result)

    def __str__(self) -> str:
        return f"task.enqueue() on AirlockBackend {self.alias!r}"


# Handle id -> handle, so get_result() finds a handle its caller only kept the id of.
_handles: weakref.WeakValueDictionary[str, AirlockTaskResult] = weakref.WeakValueDictionary()
_combined: dict[type, type] = {}


class AirlockBackend(BaseTaskBackend):  # type: ignore[misc]
    """A ``TASKS`` backend that holds ``task.enqueue()`` calls for the current airlock scope.

    Configure the real backend as the wrapper's ``OPTIONS["WRAPS"]``, a normal
    ``TASKS`` entry::

        TASKS = {
            "default": {
                "BACKEND": "airlock.integrations.django_tasks.AirlockBackend",
                "OPTIONS": {"WRAPS": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}},
            }
        }

    Inside an active scope, ``task.enqueue(*args, **kwargs)`` records the intent
    ``airlock.enqueue(task, *args, **kwargs)`` would, and returns an
    :class:`AirlockTaskResult` at once: a ``DjangoScope`` then sends it after the
    commit on its database, and a discard drops it. Outside any scope the call
    goes straight to the real backend. Django's ``task_enqueued`` fires when the
    task reaches the real backend, not when it is held.

    The object Django builds is of a class made from both, ``AirlockBackend`` first
    and the real backend's class after it, with the ``WRAPS`` entry as its settings:
    everything but ``enqueue``/``aenqueue``/``get_result`` is the real backend's own,
    and tools that check the backend's class (``db_worker --backend``) accept it.

    Raises:
        InvalidTaskBackend: A misconfigured ``OPTIONS`` or ``WRAPS``, when Django
            builds the backend (on the first task declared for it, or the system checks).

    .. versionadded:: 0.1
    """

    def __new__(cls, alias: str, params: Mapping[str, Any]) -> AirlockBackend:
        if cls is AirlockBackend:
            cls = _combine(_wrapped_class(alias, params))
        return super().__new__(cls)  # type: ignore[no-any-return]

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        wraps = _wraps_entry(alias, params)
        super().__init__(alias, wraps)
        self.wrapper_params = params
        connect()

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        if passthrough.get() or airlock.get_current_scope() is None:
            return super().enqueue(task, args, kwargs)
        return self._hold(task, args, kwargs)

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        if passthrough.get() or airlock.get_current_scope() is None:
            return await super().aenqueue(task, args, kwargs)
        return self._hold(task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        handle = _handles.get(result_id)
        if handle is None:
            return super().get_result(result_id)
        if handle._sent is not None:
            return super().get_result(handle._sent.id)
        return handle

    async def aget_result(self, result_id: str) -> Any:
        handle = _handles.get(result_id)
        if handle is None:
            return await super().aget_result(result_id)
        if handle._sent is not None:
            return await super().aget_result(handle._sent.id)
        return handle

    def _hold(self, task: Any, args: Any, kwargs: Any) -> AirlockTaskResult:
        held = _Held(self.alias)
        scope = airlock.get_current_scope()
        assert scope is not None
        if system_of(scope) in _CANNOT_SEND:
            # The scope would send it another way (or call it in-process): give the
            # intent a one-intent scope that chose django_tasks_executor; the current
            # scope captures it, so it keeps that executor and shares the scope's fate.
            policy = scope.policy if checks_on_enqueue(scope.policy) else None
            with Scope(policy, executor=django_tasks_executor):
                intent = airlock.enqueue(task, *args, _origin=held, **kwargs)
        else:
            intent = airlock.enqueue(task, *args, _origin=held, **kwargs)
        handle = AirlockTaskResult._held(task, intent.id, list(intent.args), intent.kwargs, self.alias)
        held.handle = handle
        _handles[handle.id] = handle
        return handle


def _combine(wrapped: type) -> type:
    combined = _combined.get(wrapped)
    if combined is None:
        combined = _combined[wrapped] = type(
            f"AirlockBackend[{wrapped.__name__}]",
            (AirlockBackend, wrapped),
            {"__module__": __name__, "__doc__": AirlockBackend.__doc__},
        )
    return combined


def _where(alias: str) -> str:
    return f"settings.TASKS[{alias!r}]"


def _unknown(names: Any, known: tuple[str, ...], where: str) -> str:
    hints = []
    for name in sorted(map(str, names)):
        close = difflib.get_close_matches(name.upper(), known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{where} has unknown key(s) {', '.join(hints)}; it takes {', '.join(known)}"


def _wraps_entry(alias: str, params: Mapping[str, Any]) -> dict[str, Any]:
    where = _where(alias)
    if "QUEUES" in params:
        raise InvalidTaskBackend(
            f"{where} sets QUEUES on the AirlockBackend itself; the queues belong to the real backend: "
            f"move them to {where}['OPTIONS']['WRAPS']['QUEUES']"
        )
    options = params.get("OPTIONS") or {}
    if not isinstance(options, Mapping) or "WRAPS" not in options:
        raise InvalidTaskBackend(
            f"{where}['OPTIONS'] must name the real backend under 'WRAPS', e.g. "
            "{'WRAPS': {'BACKEND': 'django_tasks_db.DatabaseBackend'}}; got "
            f"{params.get('OPTIONS')!r}"
        )
    if options.keys() - {"WRAPS"}:
        raise InvalidTaskBackend(_unknown(options.keys() - {"WRAPS"}, ("WRAPS",), f"{where}['OPTIONS']"))
    wraps = options["WRAPS"]
    where = f"{where}['OPTIONS']['WRAPS']"
    if not isinstance(wraps, Mapping) or "BACKEND" not in wraps:
        raise InvalidTaskBackend(
            f"{where} must be a TASKS entry with at least 'BACKEND' "
            f"(e.g. {{'BACKEND': 'django_tasks_db.DatabaseBackend'}}); got {wraps!r}"
        )
    if wraps.keys() - set(_ENTRY_KEYS):
        raise InvalidTaskBackend(_unknown(wraps.keys() - set(_ENTRY_KEYS), _ENTRY_KEYS, where))
    return dict(wraps)


def _wrapped_class(alias: str, params: Mapping[str, Any]) -> type:
    path = _wraps_entry(alias, params)["BACKEND"]
    where = f"{_where(alias)}['OPTIONS']['WRAPS']['BACKEND']"
    try:
        wrapped = import_string(path) if isinstance(path, str) else path
    except ImportError as error:
        raise InvalidTaskBackend(
            f"{where} = {path!r} does not import ({error}); give the dotted path of a task backend class, "
            "such as 'django_tasks_db.DatabaseBackend'"
        ) from error
    if not (isinstance(wrapped, type) and issubclass(wrapped, BaseTaskBackend)):
        raise InvalidTaskBackend(f"{where} = {path!r} is not a django.tasks backend class (a BaseTaskBackend)")
    if issubclass(wrapped, AirlockBackend):
        raise InvalidTaskBackend(f"{where} is an AirlockBackend; it must be the real backend that stores the tasks")
    return wrapped
