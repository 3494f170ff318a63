"""Django settings for proj project: django-q2 on Redis, airlock's outbox on.

A ``django-admin startproject proj`` site with the settings docs/django_q.md and
docs/reliability.md give. What a deployment would put in its environment comes
from the environment here too: the PostgreSQL database (``SHOP_DATABASE``, on
``PGHOST``/``PGPORT``/``PGUSER``) and the Redis that is django-q2's broker
(``SHOP_REDIS``), both the test's own. ``SHOP_OUTBOX`` (JSON) adds outbox options
a scenario needs (a short ``LEASE``); it is empty by default.
"""

import json
import os

SECRET_KEY = "airlock-projects-djangoq-shop"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_q",
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

# `python manage.py qcluster` serves this cluster; the web process and the relay queue onto it.
Q_CLUSTER = {
    "name": "shop",
    "workers": 2,
    "timeout": 30,
    "retry": 60,
    "redis": os.environ["SHOP_REDIS"],
}

# django-q2 takes any importable function, so the outbox names the ones it may carry:
# the relay resolves a row's name through this list only.
AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.django_q.django_q_executor",
    "OUTBOX": {
        "TASKS": ["shop.tasks.send_confirmation", "shop.tasks.reserve_stock"],
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
