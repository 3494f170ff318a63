"""Celery's canonical Django layout: ``proj/celery.py``, imported by ``proj/__init__.py``; tasks in ``shop``."""

from common_settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "airlock.integrations.django", "shop"]
ROOT_URLCONF = "proj.urls"

CELERY_BROKER_URL = REDIS_URL  # noqa: F405
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 1, "socket_connect_timeout": 2, "socket_timeout": 5}
# A module no app's autodiscovery finds: the worker imports it because it is listed here.
CELERY_IMPORTS = ["shop.jobs"]

# A logging setup as many projects write it: no "disable_existing_loggers" (dictConfig's default: True).
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}

AIRLOCK = {"EXECUTOR": "airlock.integrations.executors.celery.celery_executor", "OUTBOX": OUTBOX}  # noqa: F405
