"""The functions domain code calls: ``scope``, ``scoped``, ``enqueue``, ``policy``."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from inspect import iscoroutinefunction
from typing import Any, TypeVar, overload

from airlock import _context
from airlock._config import config
from airlock._errors import NoScopeError
from airlock._intent import Intent, is_task_object
from airlock._scope import Scope, _check_policy
from airlock.typing import Policy

__all__ = ["enqueue", "get_current_scope", "policy", "scope", "scoped"]

F = TypeVar("F", bound=Callable[..., Any])
_current = _context.current


def scope(
    policy: Policy | None = None,
    *,
    executor: Callable[[Intent], Any] | None = None,
    _cls: type[Scope] | None = None,
    **kwargs: Any,
) -> Scope:
    """A new scope, to use as ``with airlock.scope() as s:`` or ``async with``.

    A normal exit flushes; an exception discards (``Scope.should_flush``).

    Args:
        policy: Which intents may go. Default: ``configure(policy=...)``, else ``AllowAll``.
        executor: How they go. Default: ``configure(executor=...)``, else the sync executor.
        _cls: The scope class. Default: ``configure(scope_cls=...)``, else :class:`Scope`.
        **kwargs: Passed to the scope class, over ``configure(scope_kwargs=...)``
            (those apply only to the configured class, not to an explicit ``_cls``).

    .. versionadded:: 0.1
    """
    cls = _cls or config.scope_cls or Scope
    if policy is None:
        policy = config.policy
    if config.scope_kwargs and (_cls is None or _cls is config.scope_cls):
        kwargs = {**config.scope_kwargs, **kwargs}
    # By keyword, so a subclass written as __init__(self, *, policy=None, executor=None) works.
    if executor is None:
        new = cls(policy=policy, executor=config.executor, **kwargs)
        # The configured executor is a default, not a choice: nested in a scope
        # that chose one, this scope's intents go that scope's way.
        new._is_chosen = False
    else:
        new = cls(policy=policy, executor=executor, **kwargs)
    if config.dispatch_errors == "report" and "dispatch_errors" not in kwargs:
        new._reports_only = True
    return new


@overload
def scoped(policy: F) -> F: ...
@overload
def scoped(policy: Policy | None = None, *, _cls: type[Scope] | None = None, **kwargs: Any) -> Callable[[F], F]: ...
def scoped(policy: Any = None, *, _cls: type[Scope] | None = None, **kwargs: Any) -> Any:
    """Decorate a function (plain or ``async def``) so each call runs in a fresh scope.

    ``@airlock.scoped()`` and ``@airlock.scoped(DropAll(), executor=...)`` take
    the same arguments as :func:`scope`; bare ``@airlock.scoped`` works too.

    .. versionadded:: 0.1
    """
    if policy is not None and _is_plain_function(policy) and _cls is None and not kwargs:
        return scoped()(policy)

    def decorate(fn: F) -> F:
        if iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kw: Any) -> Any:
                async with scope(policy, _cls=_cls, **kwargs):
                    return await fn(*args, **kw)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            with scope(policy, _cls=_cls, **kwargs):
                return fn(*args, **kw)

        return run  # type: ignore[return-value]

    return decorate


def enqueue(
    task: Callable[..., Any],
    /,
    *args: Any,
    _name: str | None = None,
    _origin: Any = None,
    _dispatch_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Intent:
    """Record that ``task(*args, **kwargs)`` should happen, in the current scope.

    Args:
        task: What to run: a function, a Celery task, a Dramatiq actor, ...
        *args: Positional arguments for the task.
        _name: The name used by policies and logs (default: the task's own name).
        _origin: A free-form note of where the intent comes from.
        _dispatch_options: Options for the executor, e.g. ``{"countdown": 60}``.
        **kwargs: Keyword arguments for the task.

    Returns:
        The recorded :class:`Intent`.

    Raises:
        TypeError: ``task`` is not callable.
        NoScopeError: No scope is active.
        PolicyEnqueueError: Called from inside a policy.
        PolicyViolation: A policy refused the intent.

    .. versionadded:: 0.1
    """
    if not callable(task) and not is_task_object(task):
        raise TypeError(
            f"airlock.enqueue() needs a callable task first, got {task!r} of type "
            f"{type(task).__name__}; pass the function itself, e.g. enqueue(send_email, 7), "
            "or a queue's task object (with .delay, .apply_async, .send, .schedule or .enqueue)"
        )
    for key in kwargs:
        # A key starting with "_" (or with anything that sorts before "`", which is
        # rare and cheap to look at again) may be a misspelt airlock keyword.
        if key < "`" or key == _SUSPECT:
            _refuse_misspelt_keywords(task, kwargs)
            break
    current = _current.get()
    if current is None:
        raise NoScopeError(
            f"airlock.enqueue({_task_label(task)}) was called without an active airlock.scope(), "
            "and airlock never dispatches outside one. Wrap the unit of work in "
            "`with airlock.scope():`, use @airlock.scoped, the Django middleware, or a task-run scope."
        )
    return current._enqueue(task, args, kwargs, _name, _origin, _dispatch_options)


def get_current_scope() -> Scope | None:
    """The active scope of this thread / task / greenlet, or ``None``.

    .. versionadded:: 0.1
    """
    current = _current.get()
    if type(current) is _context.PolicyGuard:
        return current.scope
    return current


class policy:  # noqa: N801 - used like a function: `with airlock.policy(p):`
    """Attach ``p`` as a local policy to every intent enqueued inside the block.

    Local policies run innermost first, before the scope's own policy: their
    ``on_enqueue`` at enqueue time, their ``allows`` at flush. The block opens no
    new buffer.

    .. versionadded:: 0.1
    """

    __slots__ = ("_policy", "_tokens")

    def __init__(self, p: Policy) -> None:
        _check_policy(p, "airlock.policy()")
        self._policy = p
        self._tokens: list[Any] = []

    def __enter__(self) -> Policy:
        local = _context.local_policies
        self._tokens.append(local.set((self._policy, *local.get())))
        return self._policy

    def __exit__(self, *exc_info: object) -> None:
        _context.local_policies.reset(self._tokens.pop())

    async def __aenter__(self) -> Policy:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


_KEYWORDS = ("_name", "_origin", "_dispatch_options")
_SUSPECT = "dispatch_options"


def _refuse_misspelt_keywords(task: Any, kwargs: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` for a keyword that looks like a misspelt airlock keyword.

    A task that declares the parameter by that name gets it, as asked.
    """
    for key in kwargs:
        if not (key.startswith("_") or key == _SUSPECT):
            continue
        close = difflib.get_close_matches(key if key.startswith("_") else "_" + key, _KEYWORDS, n=1, cutoff=0.75)
        if close and not _declares(task, key):
            raise TypeError(
                f"airlock.enqueue({_task_label(task)}, {key}=...): {key!r} is not an airlock keyword "
                f"(did you mean {close[0]!r}?), and {_task_label(task)} does not declare a parameter "
                f"of that name, so it would reach the task as a keyword argument. The airlock "
                f"keywords are {', '.join(_KEYWORDS)}."
            )


def _declares(task: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(task).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


def _is_plain_function(obj: object) -> bool:
    return callable(obj) and not (hasattr(obj, "allows") and hasattr(obj, "on_enqueue"))


def _task_label(task: Callable[..., Any]) -> str:
    from airlock._intent import task_name

    return task_name(task)
