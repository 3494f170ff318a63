"""Django integration: settings-driven set-up, a commit-aware scope, request middleware.

Add ``"airlock.integrations.django"`` to ``INSTALLED_APPS`` and
``"airlock.integrations.django.AirlockMiddleware"`` to ``MIDDLEWARE``; see
``docs/django.md``.

.. versionadded:: 0.1
"""

from __future__ import annotations

try:
    import django  # type: ignore[import-untyped]  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without Django
    raise ImportError("airlock.integrations.django needs Django: pip install 'airlock-dispatch[django]'") from error

from airlock.integrations.django import checks  # noqa: F401  # registers the system checks
from airlock.integrations.django._commands import AirlockCommand, command_scope
from airlock.integrations.django._middleware import AirlockMiddleware
from airlock.integrations.django._scope import DjangoScope, TransactionRolledBack
from airlock.integrations.django._settings import configure_from_settings

__all__ = [
    "AirlockCommand",
    "AirlockMiddleware",
    "DjangoScope",
    "TransactionRolledBack",
    "command_scope",
    "configure_from_settings",
]
