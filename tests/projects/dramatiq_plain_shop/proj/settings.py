"""Django settings for proj project: Dramatiq without ``django_dramatiq``, airlock's outbox on.

A ``django-admin startproject proj`` site with the settings docs/dramatiq.md
("Without django_dramatiq") and docs/reliability.md give: ``proj/dramatiq.py``
sets the broker up (``proj/__init__.py`` imports it), the worker is ``dramatiq
proj.worker shop.tasks``, and the relay imports the same modules, from
``OUTBOX["IMPORTS"]``. What a deployment would put in its environment comes
from the environment here too: the PostgreSQL database (``SHOP_DATABASE``, on
``PGHOST``/``PGPORT``/``PGUSER``) and the Redis that is Dramatiq's broker
(``SHOP_REDIS``), both the test's own. ``SHOP_OUTBOX`` (JSON) adds outbox options
a scenario needs (a short ``LEASE``); it is empty by default.
"""

import json
import os

SECRET_KEY = "airlock-projects-dramatiq-plain-shop"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "airlock.integrations.django",
    "shop",
]

MIDDLEWARE = [
    "airlock.integrations.django.AirlockMiddleware",
]

ROOT_URLCONF = "proj.urls"
WSGI_APPLICATION = "proj.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["SHOP_DATABASE"],
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.dramatiq.dramatiq_executor",
    "OUTBOX": {
        "IMPORTS": ["shop.tasks"],  # the modules you pass to the dramatiq CLI
        **json.loads(os.environ.get("SHOP_OUTBOX") or "{}"),
    },
}

# The relay's and the fast path's lines (serving, pauses, recovered rows) on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"airlock": {"handlers": ["console"], "level": "INFO"}},
}
