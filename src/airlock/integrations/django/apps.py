"""The Django app: ``"airlock.integrations.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["AirlockConfig"]


class AirlockConfig(AppConfig):
    """Configures airlock from ``settings.AIRLOCK`` when Django starts.

    .. versionadded:: 0.1
    """

    name = "airlock.integrations.django"
    label = "airlock"
    verbose_name = "airlock"
