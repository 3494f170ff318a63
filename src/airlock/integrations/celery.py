"""Celery: a task whose run is a scope, and a shim for code that still calls ``.delay()``.

- :class:`AirlockTask`, a ``celery.Task`` base class: each run of the task is an
  airlock scope, flushed when the run succeeds and discarded when it raises or
  asks to be retried. Follow-up tasks enqueued in the body leave only once the
  body is done, as Celery messages of their own (``celery_executor``) unless the
  task or ``airlock.configure()`` names another executor.
- :func:`install_shim` / :func:`uninstall_shim` (or ``with shim():``): while a
  scope is active, existing ``.delay()`` and ``.apply_async()`` calls become
  ``airlock.enqueue`` calls, each with a warning showing the call to write instead.

The executor lives in :mod:`airlock.integrations.executors.celery`.
"""

from __future__ import annotations

import inspect
import reprlib
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

try:
    from celery import Task  # type: ignore[import-untyped]  # Celery ships no type hints
    from celery.app.task import Task as BaseTask  # type: ignore[import-untyped]
    from celery.utils import uuid  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("airlock.integrations.celery needs Celery: pip install 'airlock-dispatch[celery]'") from error

import airlock
from airlock import _context
from airlock._intent import Intent, task_name
from airlock._propagation import continue_trace
from airlock._scope import Scope
from airlock.integrations._task_run import executor_for_run
from airlock.integrations.executors.celery import celery_executor, passthrough, publishing
from airlock.typing import Policy

__all__ = [
    "AirlockTask",
    "CeleryShimWarning",
    "install_shim",
    "is_shim_installed",
    "shim",
    "uninstall_shim",
]

_current = _context.current

# Set by AirlockTask around a run; retry() marks it, so a retry(throw=False)
# that returns normally still discards the run's intents.
_retry_asked: ContextVar[list[BaseException] | None] = ContextVar("airlock.celery.retry", default=None)


class AirlockTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    """A Celery task base class whose every run is an airlock scope.

    The scope flushes when the task body returns, and is discarded when it
    raises, including the ``Retry`` that ``self.retry()`` raises (and a
    ``self.retry(throw=False)`` that returns). Intents go out as Celery tasks
    (``celery_executor``), over one producer per flush (see ``publishing()``);
    the task's ``airlock_executor``, else ``airlock.configure(executor=...)``,
    names another executor. A plain function enqueued in the body still runs in
    the worker, after the body, as ``celery_executor`` calls functions in-process.

    On a worker the run continues the trace the message carried (when a tracing
    integration is instrumented).

    Knobs, as class attributes or ``@app.task(base=AirlockTask, airlock_policy=...)``
    options; ``None`` means "as ``airlock.configure()`` says":

    Attributes:
        airlock_policy: The scope's policy.
        airlock_executor: The scope's executor (when neither this nor
            ``configure()`` sets one: ``celery_executor``).
        airlock_scope_cls: The :class:`~airlock.Scope` subclass to open.
        airlock_scope_kwargs: Extra keyword arguments for that class.

    .. versionadded:: 0.1
    """

    airlock_policy: Policy | None = None
    airlock_executor: Callable[[Intent], Any] | None = None
    airlock_scope_cls: type[Scope] | None = None
    airlock_scope_kwargs: Mapping[str, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Custom headers of the message (the trace carrier among them) land in
        # request.headers on a worker, and in eager apply(headers=...) alike.
        carrier = self.request.headers
        retries: list[BaseException] = []
        token = _retry_asked.set(retries)
        try:
            with continue_trace(carrier, name=self.name, system="celery"), publishing():
                return self._run_in_scope(retries, args, kwargs)
        finally:
            _retry_asked.reset(token)

    def _run_in_scope(self, retries: list[BaseException], args: Any, kwargs: Any) -> Any:
        scope = airlock.scope(
            self.airlock_policy,
            executor=executor_for_run(self._airlock_executor(), celery_executor),
            _cls=self.airlock_scope_cls,
            **(self.airlock_scope_kwargs or {}),
        )
        scope.enter()
        try:
            result = super().__call__(*args, **kwargs)
        except BaseException as error:
            scope.exit()
            if scope.should_flush(error):
                scope.flush()
            else:
                scope.discard(error)
            raise
        scope.exit()
        if retries:
            scope.discard(retries[0])
        elif scope.should_flush(None):
            scope.flush()
        else:
            scope.discard(None)
        return result

    def _airlock_executor(self) -> Callable[[Intent], Any] | None:
        executor = self.airlock_executor
        # A function given as a task option (or in a class body) is a class
        # attribute, so reading it binds it to the task: unbind it again.
        if inspect.ismethod(executor) and executor.__self__ is self:
            return executor.__func__
        return executor

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``retry``; the run's intents are discarded, even with ``throw=False``."""
        try:
            outcome = super().retry(*args, **kwargs)
        except BaseException as error:
            _note_retry(error)
            raise
        _note_retry(outcome)
        return outcome


def _note_retry(error: BaseException) -> None:
    retries = _retry_asked.get()
    if retries is not None:
        retries.append(error)


# -- the migration shim ---------------------------------------------------------------


class CeleryShimWarning(DeprecationWarning):
    """A ``.delay()``/``.apply_async()`` call was turned into an intent by the shim.

    The message shows the ``airlock.enqueue(...)`` call to write instead.

    .. versionadded:: 0.1
    """


# What the shim replaced, exactly as it was found in Task.__dict__.
_originals: dict[str, Any] = {}
_SHIMMED = ("apply_async", "delay", "retry")
# A live producer or connection belongs to the caller's moment; the flush publishes
# over the app's pool instead (Celery's group passes its producer this way).
_LIVE = ("producer", "connection", "publisher")
_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def install_shim() -> None:
    """Route ``.delay()``/``.apply_async()`` of every Celery task through airlock while a scope is active.

    With a scope active, the call records an intent in it (options become
    ``_dispatch_options``), returns the ``AsyncResult`` the message will have once
    the scope flushes, and warns with :class:`CeleryShimWarning`. With no scope
    active, Celery runs exactly as before. ``self.retry()`` and airlock's own
    executor always reach the broker directly. Installing twice is a no-op.

    Chains, groups, chords and ``link``/``link_error`` callbacks applied in a scope
    are deferred whole (their options travel with the intents, so the worker runs
    the rest); for them the warning says to enqueue the canvas itself. The
    warning points at the line that called Celery.

    .. versionadded:: 0.1
    """
    if _originals:
        return
    for name in _SHIMMED:
        _originals[name] = BaseTask.__dict__[name]
    BaseTask.apply_async = _shimmed_apply_async
    BaseTask.delay = _shimmed_delay
    BaseTask.retry = _shimmed_retry


def uninstall_shim() -> None:
    """Put Celery's own methods back, the very objects :func:`install_shim` found.

    Raises:
        RuntimeError: Something else replaced the methods after the shim did;
            restoring would undo that, so nothing is changed.

    .. versionadded:: 0.1
    """
    if not _originals:
        return
    ours = {"apply_async": _shimmed_apply_async, "delay": _shimmed_delay, "retry": _shimmed_retry}
    changed = [name for name in _SHIMMED if BaseTask.__dict__.get(name) is not ours[name]]
    if changed:
        raise RuntimeError(
            f"cannot uninstall airlock's Celery shim: Task.{', Task.'.join(changed)} were replaced "
            "after it was installed; undo that first"
        )
    for name in _SHIMMED:
        setattr(BaseTask, name, _originals.pop(name))


def is_shim_installed() -> bool:
    """Whether :func:`install_shim` is in effect.

    .. versionadded:: 0.1
    """
    return bool(_originals)


@contextmanager
def shim() -> Iterator[None]:
    """The shim for the block: ``with shim(): ...``. Leaves it on if it was already on.

    .. versionadded:: 0.1
    """
    was_installed = is_shim_installed()
    install_shim()
    try:
        yield
    finally:
        if not was_installed:
            uninstall_shim()


def _is_intercepted() -> bool:
    return _current.get() is not None and not passthrough.get()


def _shimmed_apply_async(self: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
    if not _is_intercepted():
        return _originals["apply_async"](self, args, kwargs, **options)
    return _record(self, tuple(args or ()), dict(kwargs or {}), options, "apply_async")


def _shimmed_delay(self: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_intercepted():
        return _originals["delay"](self, *args, **kwargs)
    return _record(self, args, kwargs, {}, "delay")


def _shimmed_retry(self: Any, *args: Any, **kwargs: Any) -> Any:
    # A retry re-sends the running task now; deferring it would lose the retry.
    token = passthrough.set(True)
    try:
        return _originals["retry"](self, *args, **kwargs)
    finally:
        passthrough.reset(token)


def _record(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any], via: str) -> Any:
    if task.typing:
        # Fail at the call, as Celery does, not at the flush.
        check = getattr(task, "__header__", None)
        if check is not None:
            check(*args, **kwargs)
    options = {key: value for key, value in options.items() if key not in _LIVE}
    kind = _canvas_kind(task, options)
    if kind is None:
        advice = f"; write {_suggestion(task, args, kwargs, options)} instead"
    else:
        advice = (
            f" as part of a Celery {kind}; enqueue the whole {kind} instead: "
            f"airlock.enqueue({kind}(...)), which celery_executor applies at the flush"
        )
    warnings.warn(
        CeleryShimWarning(f"{task_name(task)}.{via}() was turned into an airlock intent by the Celery shim{advice}"),
        stacklevel=_callers_level(),
    )
    task_id = options.get("task_id") or uuid()
    # The scope's own _enqueue, not airlock.enqueue(): the task's keyword
    # arguments may use any name, even _name or _dispatch_options.
    _current.get()._enqueue(  # type: ignore[union-attr]
        task, args, kwargs, None, f"celery shim: .{via}()", {**options, "task_id": task_id}
    )
    return task.AsyncResult(task_id)


def _canvas_kind(task: Any, options: dict[str, Any]) -> str | None:
    """The canvas primitive whose application made this call, if any.

    Celery wires a canvas with options of its own (the rest of a chain, the chord's
    body, the group's id, frozen task ids); an ``enqueue`` call copying them would be
    wrong, so the advice is to enqueue the canvas itself.
    """
    if options.get("chord") is not None or task.name == "celery.chord_unlock":
        return "chord"
    if options.get("chain"):
        return "chain"
    if options.get("group_id") is not None:
        return "group"
    return None


def _callers_level() -> int:
    """The ``stacklevel`` of the line that called Celery: the first frame outside Celery and the shim.

    A canvas reaches ``apply_async`` through several of Celery's frames, and the
    warning should point at the user's ``.apply_async()``, not at Celery's.
    """
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and _is_celery_or_shim(frame.f_globals.get("__name__", "")):
        level, frame = level + 1, frame.f_back
    return level


def _is_celery_or_shim(module: str) -> bool:
    return module == __name__ or module == "celery" or module.startswith("celery.")


def _suggestion(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> str:
    parts = [task_name(task)]
    parts += [_repr.repr(value) for value in args]
    parts += [f"{key}={_repr.repr(value)}" for key, value in kwargs.items()]
    if options:
        parts.append(f"_dispatch_options={_repr.repr(options)}")
    return f"airlock.enqueue({', '.join(parts)})"
