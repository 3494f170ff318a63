"""Django settings for proj project: Huey through ``huey.contrib.djhuey``, airlock's outbox on.

A ``django-admin startproject proj`` site with the settings docs/huey.md and
docs/reliability.md give. What a deployment would put in its environment comes
from the environment here too: the PostgreSQL database (``SHOP_DATABASE``, on
``PGHOST``/``PGPORT``/``PGUSER``) and the Redis that is Huey's storage
(``SHOP_REDIS``), both the test's own. ``SHOP_OUTBOX`` (JSON) replaces
``"OUTBOX": True`` with a dict of options where a scenario needs one (a short
``LEASE``); unset, the outbox runs at its defaults.
"""

import json
import os

SECRET_KEY = "airlock-projects-huey-shop"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "huey.contrib.djhuey",
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

# djhuey builds the Huey instance from this; `python manage.py run_huey` runs its
# consumer with every app's `tasks` module imported.
HUEY = {
    "huey_class": "huey.RedisHuey",
    "name": "shop",
    "immediate": False,
    "connection": {"url": os.environ["SHOP_REDIS"]},
    "consumer": {"workers": 2, "worker_type": "thread"},
}

# No OUTBOX["HUEY"]: the relay finds djhuey's instance, and its tasks, itself.
AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.huey.huey_executor",
    "OUTBOX": json.loads(os.environ.get("SHOP_OUTBOX") or "true"),
}
