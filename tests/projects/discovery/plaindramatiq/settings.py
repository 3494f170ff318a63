"""Dramatiq without django_dramatiq: the worker is ``dramatiq plaindramatiq.broker dramatiqshop.tasks``.

The relay imports the same modules, listed in ``OUTBOX["IMPORTS"]``.
"""

from common_settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "airlock.integrations.django"]

AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.dramatiq.dramatiq_executor",
    "OUTBOX": {"IMPORTS": ["plaindramatiq.broker", "dramatiqshop.tasks"], **OUTBOX},  # noqa: F405
}
