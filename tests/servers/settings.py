"""Settings of the served project, read from the environment the test (or bench) sets.

- ``AIRLOCK_SERVERS_DB``: the PostgreSQL database (the test's own, not the shared ``test``).
- ``AIRLOCK_SERVERS_BROKER``: the Redis URL Celery publishes to.
- ``AIRLOCK_SERVERS_QUEUE``: the Celery queue the tasks go to.
- ``AIRLOCK_SERVERS_MODE``: ``plain`` (a ``DjangoScope``, no outbox), or the outbox's
  ``FAST_PATH``: ``background``, ``inline`` or ``off``.
- ``AIRLOCK_SERVERS_OUTBOX``: JSON of further outbox options (``DRAIN_TIMEOUT``, ...).
- ``AIRLOCK_SERVERS_CONN_MAX_AGE``: Django's ``CONN_MAX_AGE`` (default 0).
- ``AIRLOCK_SERVERS_PG_OPTIONS``: libpq ``options`` for the connection.
- ``AIRLOCK_SERVERS_KEYPREFIX``: a prefix for every Redis key Celery writes (the bench
  publishes to the shared Redis, under a prefix of its own that it deletes afterwards).
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "airlock-servers-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.servers.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "NAME": os.environ.get("AIRLOCK_SERVERS_DB", "airlock_servers"),
        # The bench keeps connections, as a production server does; the tests open one per request.
        "CONN_MAX_AGE": int(os.environ.get("AIRLOCK_SERVERS_CONN_MAX_AGE", "0")),
        # libpq's options (e.g. "-c synchronous_commit=off", to see what the commits' fsyncs cost).
        "OPTIONS": {"options": os.environ["AIRLOCK_SERVERS_PG_OPTIONS"]}
        if os.environ.get("AIRLOCK_SERVERS_PG_OPTIONS")
        else {},
    }
}

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "airlock.integrations.django",
    "tests.djangoproject.shop",
    "tests.servers",
]

MIDDLEWARE = ["airlock.integrations.django.AirlockMiddleware"]

BROKER = os.environ.get("AIRLOCK_SERVERS_BROKER", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("AIRLOCK_SERVERS_QUEUE", "airlock-servers")
KEYPREFIX = os.environ.get("AIRLOCK_SERVERS_KEYPREFIX", "")
MODE = os.environ.get("AIRLOCK_SERVERS_MODE", "background")


def _airlock(mode: str) -> dict[str, object]:
    values: dict[str, object] = {"EXECUTOR": "airlock.integrations.executors.celery.celery_executor"}
    if mode == "plain":
        return values
    if mode not in ("background", "inline", "off"):
        raise ValueError(f"AIRLOCK_SERVERS_MODE={mode!r}: one of plain, background, inline, off")
    outbox: dict[str, object] = {"FAST_PATH": False if mode == "off" else mode, "POLL": 0.05}
    outbox.update(json.loads(os.environ.get("AIRLOCK_SERVERS_OUTBOX") or "{}"))
    values["OUTBOX"] = outbox
    return values


AIRLOCK = _airlock(MODE)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"airlock": {"handlers": ["stderr"], "level": "INFO"}},
}
