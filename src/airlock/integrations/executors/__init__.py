"""Executors: callables that take an ``Intent`` and send it on its way.

One module per queue library: ``sync`` (the default), ``celery``, ``huey``,
``dramatiq`` and ``django_q``. The queue executors bound each publish and stop
trying a broker that failed in the same flush; the knobs live here.
"""

from airlock.integrations.executors._deadline import (
    DEFAULT_PUBLISH_TIMEOUT,
    BrokerUnavailableError,
    flush_window,
    publish_timeout,
)

__all__ = ["DEFAULT_PUBLISH_TIMEOUT", "BrokerUnavailableError", "flush_window", "publish_timeout"]
