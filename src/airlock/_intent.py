"""``Intent``: one side effect that domain code asked for."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NoReturn, final

if TYPE_CHECKING:
    from airlock.typing import Policy

__all__ = ["Intent"]

_PROCESS = os.urandom(4).hex()


def _read_only(name: str) -> Callable[[Any, Any], NoReturn]:
    def refuse(intent: Any, value: Any) -> NoReturn:
        raise AttributeError(f"Intent is immutable: cannot set {name!r}. Enqueue a new intent instead.")

    return refuse


@final
class _Meta:
    """The rarely set parts of an intent, kept out of line to keep intents small."""

    __slots__ = ("dispatch_options", "local_policies", "name", "origin", "trace_context")

    def __init__(
        self,
        name: str | None,
        origin: Any,
        dispatch_options: Mapping[str, Any] | None,
        local_policies: tuple[Policy, ...],
        trace_context: Any,
    ) -> None:
        self.name = name
        self.origin = origin
        self.dispatch_options = dispatch_options
        self.local_policies = local_policies
        self.trace_context = trace_context


@final
class Intent:
    """One recorded side effect: a task and the arguments to call it with.

    Intents are immutable (assigning an attribute raises ``AttributeError``) and
    deliberately unhashable: two intents with the same task and arguments are two
    side effects, not one.

    Attributes:
        task: The callable (a function, a Celery task, a Dramatiq actor, ...).
        args: Positional arguments, always a tuple.
        kwargs: Keyword arguments, a dict.
        origin: Free-form note of where the intent came from (``_origin=``), or ``None``.
        dispatch_options: Executor options (``_dispatch_options=``), or ``None``.
        local_policies: Policies from enclosing ``airlock.policy()`` blocks, innermost first.
        trace_context: The tracing context current at enqueue time, when a tracer is
            instrumented (see :mod:`airlock.integrations.opentelemetry`), else ``None``.
        enqueued_at_ns: Wall-clock time of the enqueue, in nanoseconds since the epoch.

    .. versionadded:: 0.1
    """

    # Five private slots behind read-only properties: an intent costs 72 bytes of its
    # own, and building one is plain slot stores (a custom __setattr__ would make every
    # store a Python call, roughly quadrupling the cost of enqueue).
    __slots__ = ("_args", "_kwargs", "_meta", "_stamp", "_task")

    def __init__(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        origin: Any = None,
        dispatch_options: Mapping[str, Any] | None = None,
        local_policies: tuple[Policy, ...] = (),
        trace_context: Any = None,
        enqueued_at_ns: int = 0,
        _local_policies: tuple[Policy, ...] = (),
    ) -> None:
        if not callable(task) and not is_task_object(task):
            raise TypeError(
                f"an intent's task must be callable or a queue's task object (with .delay, "
                f".apply_async, .send, .schedule or .enqueue), got {task!r} of type {type(task).__name__}"
            )
        if hasattr(self, "_task"):
            raise AttributeError("Intent is immutable: it cannot be initialised twice")
        local_policies = tuple(local_policies) or tuple(_local_policies)  # airlock-py's spelling
        meta = None
        if (
            name is not None
            or origin is not None
            or dispatch_options is not None
            or local_policies
            or trace_context is not None
        ):
            options = None if dispatch_options is None else dict(dispatch_options)
            meta = _Meta(name, origin, options, tuple(local_policies), trace_context)
        self._task = task
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._meta = meta
        self._stamp = enqueued_at_ns

    task = property(attrgetter("_task"), _read_only("task"))
    args = property(attrgetter("_args"), _read_only("args"))
    kwargs = property(attrgetter("_kwargs"), _read_only("kwargs"))
    enqueued_at_ns = property(attrgetter("_stamp"), _read_only("enqueued_at_ns"))

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "an Intent is an in-process record and is not pickled; "
            "send intent.task with intent.args and intent.kwargs instead"
        )

    @property
    def origin(self) -> Any:
        meta = self._meta
        return None if meta is None else meta.origin

    @property
    def dispatch_options(self) -> Mapping[str, Any] | None:
        meta = self._meta
        return None if meta is None else meta.dispatch_options

    @property
    def local_policies(self) -> tuple[Policy, ...]:
        meta = self._meta
        return () if meta is None else meta.local_policies

    @property
    def trace_context(self) -> Any:
        meta = self._meta
        return None if meta is None else meta.trace_context

    @property
    def id(self) -> str:
        """A unique, stable id for logs and traces (unique across processes too)."""
        # f"{_PROCESS}{stamp:x}{address:08x}", built without format specs, which cost
        # more than the rest: observers ask for it several times per intent.
        return _PROCESS + hex(self._stamp)[2:] + hex(id(self) & 0xFFFFFFFF | 0x100000000)[3:]

    @property
    def name(self) -> str:
        """``_name`` if given, else the last dotted part of ``task.name``, else ``__name__``.

        Celery tasks and Huey tasks carry ``name``, Dramatiq actors ``actor_name``.
        """
        meta = self._meta
        if meta is not None and meta.name is not None:
            return meta.name
        task = self._task
        last = _last_name
        if last[0] is task:
            return last[1]
        return _name_and_remember(task)

    def passes_local_policies(self) -> bool:
        """Whether every local policy, innermost first, allows this intent."""
        return all(policy.allows(self) for policy in self.local_policies)

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        parts = f"name={self.name!r}, args={self._args!r}, kwargs={self._kwargs!r}"
        meta = self._meta
        if meta is not None:
            if meta.dispatch_options:
                parts += f", dispatch_options={dict(meta.dispatch_options)!r}"
            if meta.origin is not None:
                parts += f", origin={meta.origin!r}"
        return f"Intent({parts})"


# Observers and policies ask for the names of a run of intents that mostly share a
# task. Remember the last task's name: one pair, replaced whole (so threads cannot
# mix a task with another's name), holding no more than one task alive.
_last_name: tuple[object, str] = (object(), "")


def _name_and_remember(task: Callable[..., Any]) -> str:
    global _last_name
    name = task_name(task)
    _last_name = (task, name)
    return name


def task_name(task: Callable[..., Any]) -> str:
    """The short name airlock uses for a task (see :attr:`Intent.name`)."""
    for attribute in ("name", "actor_name"):
        value = getattr(task, attribute, None)
        if isinstance(value, str) and value:
            return value.rpartition(".")[2]
    value = getattr(task, "__name__", None)
    if isinstance(value, str):
        return value
    # A Huey TaskWrapper has neither: its name is that of the task class it registers.
    value = getattr(getattr(task, "task_class", None), "__name__", None)
    if isinstance(value, str):
        return value
    return type(task).__name__


_TASK_METHODS = ("delay", "apply_async", "send", "schedule", "enqueue")


def is_task_object(task: object) -> bool:
    """True for a queue's task object that is not callable itself (a Django 6 ``Task``)."""
    return any(callable(getattr(task, method, None)) for method in _TASK_METHODS)


def with_arguments(intent: Intent, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Intent:
    """The same intent (task, name, options, stamp, trace) with other arguments.

    For an executor's ``check_enqueue`` that snapshots what it will send.
    """
    return _new(intent._task, tuple(args), dict(kwargs), intent._meta, intent._stamp)


def _new(
    task: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    meta: _Meta | None,
    stamp: int,
) -> Intent:
    """The enqueue fast path: build an intent without re-validating what enqueue checked."""
    intent = _alloc(Intent)
    intent._task = task
    intent._args = args
    intent._kwargs = kwargs
    intent._meta = meta
    intent._stamp = stamp
    return intent


_alloc = object.__new__
