"""Executors: callables that take an ``Intent`` and send it on its way.

One module per queue library: ``sync`` (the default), ``celery``, ``huey``,
``dramatiq`` and ``django_q``.
"""
