"""System checks: settings airlock cannot honour are reported by ``manage.py check``.

Registered whenever the Django integration is imported: by the app in
``INSTALLED_APPS``, and by the middleware, a command or any module that imports it.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps  # type: ignore[import-untyped]  # Django ships no type hints
from django.conf import settings  # type: ignore[import-untyped]
from django.core import checks  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

__all__ = ["APP", "MIDDLEWARE", "check_settings", "check_values", "defer_settings_error"]

APP = "airlock.integrations.django"
MIDDLEWARE = "airlock.integrations.django.AirlockMiddleware"

# settings.AIRLOCK keys that only the app can honour (they need its models or its
# start-up hook); the middleware alone cannot.
APP_ONLY_KEYS = frozenset({"OUTBOX"})


def is_app_installed() -> bool:
    return bool(apps.is_installed(APP))


@checks.register("airlock")  # type: ignore[untyped-decorator]  # Django ships no type hints
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report ``settings.AIRLOCK`` that will not (or only partly) take effect."""
    if is_app_installed():
        return []
    values = getattr(settings, "AIRLOCK", None) or {}
    uses_middleware = MIDDLEWARE in getattr(settings, "MIDDLEWARE", ())
    messages: list[checks.CheckMessage] = []
    app_only = sorted(key for key in values if key in APP_ONLY_KEYS)
    if app_only:
        messages.append(
            checks.Error(
                f"settings.AIRLOCK sets {', '.join(app_only)}, which needs the airlock app.",
                hint=f"Add {APP!r} to INSTALLED_APPS (then run `manage.py migrate`).",
                id="airlock.E001",
            )
        )
    if values and uses_middleware:
        messages.append(
            checks.Warning(
                "settings.AIRLOCK is applied by AirlockMiddleware when the web process starts, so "
                "requests honour it; processes that serve no requests (Celery/Dramatiq/Huey workers, "
                "management commands) do not see it, because the airlock app is not installed.",
                hint=f"Add {APP!r} to INSTALLED_APPS.",
                id="airlock.W001",
            )
        )
    elif values:
        messages.append(
            checks.Error(
                "settings.AIRLOCK is set, but neither the airlock app nor AirlockMiddleware is "
                "installed, so nothing applies it: airlock runs on its defaults.",
                hint=f"Add {APP!r} to INSTALLED_APPS (and {MIDDLEWARE!r} to MIDDLEWARE for request scopes).",
                id="airlock.E002",
            )
        )
    return messages


# What the app's ready() found wrong in settings.AIRLOCK while `manage.py check` starts
# (apps.py): reported by check_values() below instead of a traceback.
_deferred: list[ImproperlyConfigured] = []


def defer_settings_error(error: ImproperlyConfigured) -> None:
    """Keep a settings error for :func:`check_values` to report (``manage.py check`` only)."""
    _deferred.append(error)


@checks.register("airlock")  # type: ignore[untyped-decorator]  # Django ships no type hints
def check_values(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report the ``settings.AIRLOCK`` the app refused at start-up, as an error rather than a traceback.

    ``airlock.E003`` is a bad ``AIRLOCK``, ``airlock.E004`` a bad ``AIRLOCK["OUTBOX"]``;
    the message is the one every other command refuses to start with.

    .. versionadded:: 0.1
    """
    return [_as_check_error(error) for error in _deferred]


def _as_check_error(error: ImproperlyConfigured) -> checks.Error:
    where, docs, number = "settings.AIRLOCK", "docs/django.md, Settings", 3
    if str(error).startswith("settings.AIRLOCK['OUTBOX']"):
        where, docs, number = "settings.AIRLOCK['OUTBOX']", "docs/reliability.md, Options", 4
    return checks.Error(
        str(error),
        hint=(
            f"Fix {where} as the message says (the keys and their values: {docs}). Until then every "
            "other command, the web process and the relay refuse to start with this message."
        ),
        id=f"airlock.E00{number}",
    )
