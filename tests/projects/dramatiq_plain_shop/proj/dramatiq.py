"""Dramatiq's broker, set up when the ``proj`` package is imported: by the settings, the worker, the relay.

The Redis URL comes from the environment (the test's own Redis, ``SHOP_REDIS``).
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from airlock.integrations.dramatiq import AirlockMiddleware

broker = RedisBroker(url=os.environ["SHOP_REDIS"])
broker.add_middleware(CurrentMessage())  # deduplicate reads the message id from it
broker.add_middleware(AirlockMiddleware())  # each actor's run is a scope
dramatiq.set_broker(broker)
