"""``settings.AIRLOCK``: read, check and apply at start-up."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]  # Django ships no type hints
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

import airlock
from airlock import Scope

__all__ = ["configure_from_settings"]

KEYS = ("POLICY", "EXECUTOR", "SCOPE", "SCOPE_KWARGS", "DISPATCH_ERRORS", "OUTBOX")


def configure_from_settings(values: Any = None) -> dict[str, Any]:
    """Check ``settings.AIRLOCK`` and apply it with :func:`airlock.configure`.

    The app calls this in ``ready()``; call it yourself after changing settings
    (in a test, say). Each key takes a dotted path or the object itself:

    - ``POLICY``: a policy instance, or a policy class taking no arguments.
    - ``EXECUTOR``: a callable taking one :class:`~airlock.Intent`.
    - ``SCOPE``: a :class:`~airlock.Scope` subclass; default :class:`DjangoScope`.
    - ``SCOPE_KWARGS``: a dict of keyword arguments for ``SCOPE`` (``{"using": "orders"}``).
    - ``DISPATCH_ERRORS``: ``"raise"`` (default) or ``"report"`` (see :func:`airlock.configure`).
    - ``OUTBOX``: ``True`` or a dict of options: the default scope becomes
      :class:`~airlock.integrations.django.outbox.OutboxScope` (see docs/reliability.md).

    Args:
        values: The mapping to apply instead of ``settings.AIRLOCK``.

    Returns:
        What was passed to :func:`airlock.configure`.

    Raises:
        ImproperlyConfigured: An unknown key, a path that does not import, or a
            value of the wrong kind; the message names the key and the valid choices.

    .. versionadded:: 0.1
    """
    if values is None:
        values = getattr(settings, "AIRLOCK", None) or {}
    if not isinstance(values, Mapping):
        raise ImproperlyConfigured(
            f"settings.AIRLOCK must be a dict with some of the keys {', '.join(KEYS)}, got {values!r}"
        )
    unknown = [key for key in values if key not in KEYS]
    if unknown:
        raise ImproperlyConfigured(_unknown_keys(unknown))
    from airlock.integrations.django._scope import DjangoScope

    default_scope: type[Scope] = DjangoScope
    if "OUTBOX" in values:
        # Imported only when asked for: the outbox has models, which need the app.
        from airlock.integrations.django.outbox import OutboxScope, configure_outbox

        if configure_outbox(values["OUTBOX"]).enabled:
            default_scope = OutboxScope
    chosen = {
        "policy": _resolve(values, "POLICY", _as_policy),
        "executor": _resolve(values, "EXECUTOR", _as_executor),
        "scope_cls": _resolve(values, "SCOPE", _as_scope_class) or default_scope,
        "scope_kwargs": _resolve(values, "SCOPE_KWARGS", _as_kwargs) or {},
    }
    if default_scope is not DjangoScope and not issubclass(chosen["scope_cls"], default_scope):
        raise ImproperlyConfigured(
            f"settings.AIRLOCK['OUTBOX'] is on, but SCOPE {chosen['scope_cls'].__name__} does not write to it; "
            "subclass airlock.integrations.django.outbox.OutboxScope, or leave SCOPE out"
        )
    if values.get("DISPATCH_ERRORS") is not None:
        chosen["dispatch_errors"] = _as_dispatch_errors("DISPATCH_ERRORS", values["DISPATCH_ERRORS"])
    _try_a_scope(chosen)
    airlock.configure(**chosen)
    return chosen


def configure_without_app() -> None:
    """Apply ``settings.AIRLOCK`` for a process whose ``INSTALLED_APPS`` lacks the app.

    Raises:
        ImproperlyConfigured: A key only the app can honour, or a bad setting.
    """
    from airlock.integrations.django.checks import APP, APP_ONLY_KEYS

    values = getattr(settings, "AIRLOCK", None) or {}
    app_only = sorted(key for key in values if key in APP_ONLY_KEYS) if isinstance(values, Mapping) else []
    if app_only:
        raise ImproperlyConfigured(
            f"settings.AIRLOCK sets {', '.join(app_only)}, which needs the airlock app: add {APP!r} to INSTALLED_APPS"
        )
    configure_from_settings()


def _resolve(values: Mapping[str, Any], key: str, convert: Callable[[str, Any], Any]) -> Any:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, str) and key != "SCOPE_KWARGS":
        try:
            value = import_string(value)
        except ImportError as error:
            raise ImproperlyConfigured(
                f"settings.AIRLOCK[{key!r}] = {values[key]!r} does not import ({error}); "
                f"give a dotted path such as {_EXAMPLES[key]!r}, or the object itself"
            ) from error
    return convert(key, value)


def _as_policy(key: str, value: Any) -> Any:
    if isinstance(value, type):
        # "airlock.DropAll" reads naturally in settings; make the instance for the user.
        try:
            value = value()
        except TypeError as error:
            raise _wrong(key, value, f"a policy class that takes no arguments ({error})") from error
    if not (callable(getattr(value, "allows", None)) and callable(getattr(value, "on_enqueue", None))):
        raise _wrong(key, value, "a policy: an object with on_enqueue(intent) and allows(intent)")
    return value


def _as_executor(key: str, value: Any) -> Any:
    if isinstance(value, type) or not callable(value):
        raise _wrong(key, value, "a callable taking one Intent (a function or an instance, not a class)")
    return value


def _as_dispatch_errors(key: str, value: Any) -> str:
    if value not in ("raise", "report"):
        raise _wrong(key, value, "'raise' or 'report'")
    return str(value)


def _as_scope_class(key: str, value: Any) -> Any:
    if not (isinstance(value, type) and issubclass(value, Scope)):
        raise _wrong(key, value, "a subclass of airlock.Scope, such as DjangoScope")
    return value


def _as_kwargs(key: str, value: Any) -> Any:
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise _wrong(key, value, "a dict of keyword arguments for the SCOPE class")
    return dict(value)


def _try_a_scope(chosen: dict[str, Any]) -> None:
    """Build one scope now, so bad SCOPE_KWARGS fail at start-up, not on a request."""
    try:
        chosen["scope_cls"](policy=chosen["policy"], executor=chosen["executor"], **chosen["scope_kwargs"])
    except (TypeError, ValueError) as error:
        raise ImproperlyConfigured(
            f"settings.AIRLOCK['SCOPE_KWARGS'] = {chosen['scope_kwargs']!r} does not suit "
            f"{chosen['scope_cls'].__name__}: {error}"
        ) from error


def _wrong(key: str, value: Any, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"settings.AIRLOCK[{key!r}] must be {expected}; got {value!r}")


def _unknown_keys(unknown: list[str]) -> str:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key).upper(), KEYS, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"settings.AIRLOCK has unknown key(s) {', '.join(hints)}; the valid keys are {', '.join(KEYS)}"


_EXAMPLES = {
    "POLICY": "airlock.LogOnFlush",
    "EXECUTOR": "airlock.integrations.executors.celery.celery_executor",
    "SCOPE": "airlock.integrations.django.DjangoScope",
}
