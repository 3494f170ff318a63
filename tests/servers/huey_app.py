"""``huey_consumer tests.servers.huey_app.huey``: a Huey consumer whose task sends follow-ups.

Django first (the served project's settings), then a Huey on the served
project's broker URL; ``fanout`` is declared with airlock's ``airlock_task``, so
each run is an airlock scope and the Celery follow-ups it enqueues go through the
outbox (and its background publisher, in the consumer process) once it returns.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.settings")
django.setup()

from django.conf import settings  # noqa: E402
from huey import RedisHuey  # noqa: E402

from airlock.integrations.huey import airlock_task  # noqa: E402
from tests.servers.tasks import commit_follow_ups  # noqa: E402

NAME = "airlock-servers-huey"
TASK = "fanout"  # registered as tests.servers.huey_app.fanout

huey = RedisHuey(NAME, url=settings.BROKER)


@airlock_task(huey, name=TASK)
def fanout(token: str, count: int) -> None:
    commit_follow_ups(token, count)
