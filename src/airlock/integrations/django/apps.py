"""The Django app: ``"airlock.integrations.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

import sys
from importlib.util import find_spec

from django.apps import AppConfig  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django._settings import configure_from_settings

__all__ = ["AirlockConfig"]


class AirlockConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """Configures airlock from ``settings.AIRLOCK`` when Django starts.

    A bad ``AIRLOCK`` setting raises ``ImproperlyConfigured`` here, at start-up,
    rather than on the first request.

    .. versionadded:: 0.1
    """

    name = "airlock.integrations.django"
    label = "airlock"
    verbose_name = "airlock"

    def ready(self) -> None:
        configure_from_settings()
        options = sys.modules.get("airlock.integrations.django.outbox._options")
        if options is not None and options.outbox_options().enabled:
            from airlock.integrations.django.outbox._background import drain_on_sigterm

            if options.outbox_options()["FAST_PATH"] == "background":
                drain_on_sigterm()  # here, on the main thread, whichever thread commits first
        if find_spec("django.tasks") is not None:
            # Django 6: every run of a django.tasks task is a scope (docs/django_tasks.md).
            from airlock.integrations.django_tasks import connect

            connect()
