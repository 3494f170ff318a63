"""Dramatiq through ``django_dramatiq``: ``DRAMATIQ_BROKER``, actors in ``dramatiqshop/tasks.py``."""

from common_settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "airlock.integrations.django", "django_dramatiq", "dramatiqshop"]

DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
    "OPTIONS": {"url": REDIS_URL},  # noqa: F405
    "MIDDLEWARE": ["dramatiq.middleware.CurrentMessage"],
}

AIRLOCK = {"EXECUTOR": "airlock.integrations.executors.dramatiq.dramatiq_executor", "OUTBOX": OUTBOX}  # noqa: F405
