"""Django integration: settings-driven set-up, a commit-aware scope, request middleware.

Add ``"airlock.integrations.django"`` to ``INSTALLED_APPS`` and
``"airlock.integrations.django.AirlockMiddleware"`` to ``MIDDLEWARE``.

.. versionadded:: 0.1
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without Django
    raise ImportError(
        "airlock.integrations.django needs Django: pip install 'airlock[django]'"
    ) from error

from airlock.integrations.django._middleware import AirlockMiddleware

__all__ = ["AirlockMiddleware"]
