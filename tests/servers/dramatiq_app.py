"""``python -m dramatiq tests.servers.dramatiq_app``: a Dramatiq worker whose actor sends follow-ups.

Django first (the served project's settings), then a Redis broker on the served
project's broker URL, with airlock's middleware: each run of ``fanout`` is an
airlock scope, and the Celery follow-ups it enqueues go through the outbox (and
its background publisher, in the worker process) once the run succeeds.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.settings")
django.setup()

import dramatiq  # noqa: E402
from django.conf import settings  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

from airlock.integrations.dramatiq import AirlockMiddleware  # noqa: E402
from tests.servers.tasks import commit_follow_ups  # noqa: E402

NAMESPACE = "airlock-servers-dramatiq"
ACTOR = "servers.dramatiq_fanout"

broker = RedisBroker(url=settings.BROKER, namespace=NAMESPACE)
broker.add_middleware(AirlockMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR, broker=broker, max_retries=0)
def fanout(token: str, count: int) -> None:
    commit_follow_ups(token, count)
