"""Django settings for proj project: Celery on Redis, airlock's outbox on.

A ``django-admin startproject proj`` site with the settings docs/celery.md and
docs/reliability.md give. What a deployment would put in its environment comes
from the environment here too: the PostgreSQL database (``SHOP_DATABASE``, on
``PGHOST``/``PGPORT``/``PGUSER``) and the Redis that is Celery's broker
(``SHOP_REDIS``), both the test's own. ``SHOP_OUTBOX`` (JSON) replaces
``"OUTBOX": True`` with a dict of options where a scenario needs one (a short
``LEASE``); unset, the outbox runs at its defaults.
"""

import json
import os

SECRET_KEY = "airlock-projects-celery-shop"
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

# Celery reads these (proj/celery.py: namespace="CELERY").
CELERY_BROKER_URL = os.environ["SHOP_REDIS"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # docs/reliability.md, "The broker settings it relies on": a dead broker fails in
    # seconds, a frozen one times out.
    "max_retries": 1,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    # A worker that loses its broker connection drops the messages it had prefetched;
    # Redis holds them as unacknowledged and hands them out again only after the
    # visibility timeout (an hour by default), swept every interval x throttle seconds
    # (100 by default). These tasks take milliseconds: seconds are enough.
    "visibility_timeout": 10,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}

AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.celery.celery_executor",
    "OUTBOX": json.loads(os.environ.get("SHOP_OUTBOX") or "true"),
}
