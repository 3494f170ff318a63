"""``proj`` as it was before its ``__init__.py`` imported the Celery app: nothing creates the app."""

from common_settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "airlock.integrations.django", "shop"]

CELERY_BROKER_URL = REDIS_URL  # noqa: F405

AIRLOCK = {"EXECUTOR": "airlock.integrations.executors.celery.celery_executor", "OUTBOX": OUTBOX}  # noqa: F405
