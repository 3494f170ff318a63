"""``celery -A tests.servers.worker worker``: Django first, then the served project's Celery app."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.settings")
django.setup()

from tests.servers.tasks import app  # noqa: E402

__all__ = ["app"]
