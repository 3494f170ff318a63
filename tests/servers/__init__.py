"""A small Django project served by real servers (gunicorn, uvicorn, runserver) in the process-model tests.

Everything it needs comes from the environment (see :mod:`tests.servers.settings`),
so a test or the bench starts it as a user would: ``gunicorn tests.servers.wsgi``,
``uvicorn tests.servers.asgi:application``, ``python -m django runserver``, a
management command, ``celery -A tests.servers.worker worker``.
"""
