"""Django settings for proj project: Django 6's ``django.tasks`` on django-tasks-db, airlock's outbox on.

A ``django-admin startproject proj`` site with the settings docs/django_tasks.md
and docs/reliability.md give (Django 6, so Python 3.12+). The database is the
task backend's too: ``python manage.py db_worker`` runs what django-tasks-db stored
there. What a deployment would put in its environment comes from the environment
here too: the PostgreSQL database (``SHOP_DATABASE``, on ``PGHOST``/``PGPORT``/
``PGUSER``), the test's own. ``SHOP_OUTBOX`` (JSON) adds outbox options a
scenario needs (a short ``LEASE``); it is empty by default.
"""

import json
import os

SECRET_KEY = "airlock-projects-tasks-shop"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_tasks_db",
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

# AirlockBackend wraps the real backend: a plain `task.enqueue()` waits for the commit
# (with the outbox on, it is a row in the transaction). It is still a DatabaseBackend,
# so `python manage.py db_worker` serves it.
TASKS = {
    "default": {
        "BACKEND": "airlock.integrations.django_tasks.AirlockBackend",
        "OPTIONS": {"WRAPS": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}},
    }
}

# The outbox carries only the tasks listed here; the relay resolves a row's name through this list.
AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.django_tasks.django_tasks_executor",
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
