"""Process-wide defaults for new scopes: all of airlock's global state, in one object."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, final

from airlock._intent import Intent
from airlock._scope import Scope, _check_policy, check_dispatch_errors, unknown_keywords
from airlock.typing import Policy

__all__ = ["configure", "get_configuration", "reset_configuration"]

_KEYS = ("scope_cls", "policy", "executor", "scope_kwargs", "dispatch_errors")


@final
class _Configuration:
    __slots__ = _KEYS

    def __init__(self) -> None:
        self.scope_cls: type[Scope] | None = None
        self.policy: Policy | None = None
        self.executor: Callable[[Intent], Any] | None = None
        self.scope_kwargs: dict[str, Any] = {}
        self.dispatch_errors: str | None = None


config = _Configuration()


def configure(
    *,
    scope_cls: type[Scope] | None = None,
    policy: Policy | None = None,
    executor: Callable[[Intent], Any] | None = None,
    scope_kwargs: Mapping[str, Any] | None = None,
    dispatch_errors: str | None = None,
    **unknown: Any,
) -> None:
    """Set process-wide defaults for scopes. Arguments left out keep their value.

    Explicit arguments to :func:`scope` and :func:`scoped` always win over these.

    Args:
        scope_cls: The :class:`Scope` subclass to create (e.g. ``DjangoScope``).
        policy: The default policy.
        executor: The default executor.
        scope_kwargs: Extra keyword arguments for ``scope_cls`` (e.g. ``using="db2"``).
        dispatch_errors: ``"raise"`` (the default: a flush whose executor failed raises
            one :class:`~airlock.DispatchError`) or ``"report"`` (log and signal only).

    Raises:
        TypeError: An unknown keyword, or a value of the wrong kind.

    .. versionadded:: 0.1
    """
    if unknown:
        raise TypeError(_unknown_keywords("configure()", unknown))
    if scope_cls is not None and not (isinstance(scope_cls, type) and issubclass(scope_cls, Scope)):
        raise TypeError(f"configure(scope_cls=...) must be a subclass of airlock.Scope, got {scope_cls!r}")
    if policy is not None:
        _check_policy(policy, "configure(policy=...)")
    if executor is not None and not callable(executor):
        raise TypeError(f"configure(executor=...) must be callable with one Intent, got {executor!r}")
    if scope_kwargs is not None and not isinstance(scope_kwargs, Mapping):
        raise TypeError(f"configure(scope_kwargs=...) must be a mapping, got {scope_kwargs!r}")
    if dispatch_errors is not None:
        check_dispatch_errors(dispatch_errors, "configure(dispatch_errors=...)")
    if scope_cls is not None:
        config.scope_cls = scope_cls
    if policy is not None:
        config.policy = policy
    if executor is not None:
        config.executor = executor
    if scope_kwargs is not None:
        config.scope_kwargs = dict(scope_kwargs)
    if dispatch_errors is not None:
        config.dispatch_errors = dispatch_errors


def reset_configuration() -> None:
    """Forget everything :func:`configure` set. Meant for tests.

    .. versionadded:: 0.1
    """
    config.__init__()


def get_configuration() -> dict[str, Any]:
    """A copy of the current defaults, keyed like :func:`configure`'s arguments.

    .. versionadded:: 0.1
    """
    return {
        "scope_cls": config.scope_cls,
        "policy": config.policy,
        "executor": config.executor,
        "scope_kwargs": dict(config.scope_kwargs),
        "dispatch_errors": config.dispatch_errors,
    }


def _unknown_keywords(where: str, unknown: Mapping[str, Any]) -> str:
    return unknown_keywords(where, unknown, _KEYS)
