"""The broker, set before any actor is declared: the first module the ``dramatiq`` CLI is given."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

broker = RedisBroker(url=os.environ["DISCOVERY_REDIS"])
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
