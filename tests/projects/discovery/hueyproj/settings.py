"""Huey through ``huey.contrib.djhuey``: ``settings.HUEY``, tasks in ``hueyshop/tasks.py``; no ``OUTBOX["HUEY"]``."""

from common_settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "airlock.integrations.django", "huey.contrib.djhuey", "hueyshop"]

HUEY = {"huey_class": "huey.RedisHuey", "name": "discovery", "immediate": False, "url": REDIS_URL}  # noqa: F405

AIRLOCK = {"EXECUTOR": "airlock.integrations.executors.huey.huey_executor", "OUTBOX": OUTBOX}  # noqa: F405
