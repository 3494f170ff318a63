"""Dropping duplicates in consumers: the outbox delivers at least once, not exactly once."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, transaction  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox._models import ProcessedIntent

__all__ = ["current_intent_id", "deduplicate", "first_delivery"]

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("airlock.integrations.django.outbox")


def first_delivery(intent_id: str, *, using: str = "default") -> bool:
    """Record ``intent_id`` as processed; ``False`` if it already was.

    Call it inside the transaction that does the task's work: if the work rolls
    back, so does the record, and the next delivery runs again.

    .. versionadded:: 0.1
    """
    if not isinstance(intent_id, str) or not intent_id:
        raise TypeError(f"first_delivery() needs the intent id (a non-empty str), got {intent_id!r}")
    try:
        with transaction.atomic(using=using):  # a savepoint: a duplicate leaves the caller's transaction usable
            ProcessedIntent.objects.using(using).create(intent_id=intent_id)
    except IntegrityError:
        return False
    return True


def current_intent_id() -> str | None:
    """The intent id of the message being run: Celery's ``task_id``, Dramatiq's ``message_id``,
    or the one the outbox gave a ``django.tasks`` task declared with ``airlock_task``.

    Dramatiq needs its ``CurrentMessage`` middleware. A ``django.tasks`` task's
    ``TaskResult`` id is its backend's own, not the intent id, so a plain ``@task``
    has none here; declare it with ``airlock_task``. For Huey and django-q2, pass
    the id yourself (``deduplicate(id_of=...)``, or call :func:`first_delivery`).
    """
    # Looked up, never imported: the module needs Django 6, and is loaded whenever
    # an airlock_task runs.
    django_tasks = sys.modules.get("airlock.integrations.executors.django_tasks")
    if django_tasks is not None:
        intent_id: str | None = django_tasks.running_intent.get()
        if intent_id is not None:
            return intent_id
    try:
        from celery import current_task  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - without Celery
        current_task = None
    if current_task and current_task.request.id:  # a Proxy: false when no task runs
        return str(current_task.request.id)
    try:
        from dramatiq.middleware import CurrentMessage
    except ImportError:  # pragma: no cover - without Dramatiq
        return None
    message = CurrentMessage.get_current_message()
    return None if message is None else str(message.message_id)


def deduplicate(
    function: F | None = None, *, using: str = "default", id_of: Callable[..., str | None] | None = None
) -> Any:
    """Run the task body once per intent id; a second delivery returns ``None`` without running it.

    The body runs inside ``transaction.atomic(using=using)``, together with the
    record of its id, so a body that fails is not recorded. Put it under the
    queue's decorator::

        @app.task
        @deduplicate
        def send_receipt(order_id): ...

    For ``django.tasks``, under ``airlock_task`` (a plain ``@task`` never learns
    its intent id)::

        @airlock_task
        @deduplicate
        def send_receipt(order_id): ...

    Args:
        using: The database holding the ``airlock_processed_intent`` table.
        id_of: Returns the id from the task's arguments; default
            :func:`current_intent_id`.

    Raises:
        RuntimeError: No intent id is known for the running task.
        TypeError: ``function`` is a coroutine function (or, at run time, the
            body returned an awaitable): its work would run after the
            transaction that records its id, so a failure would drop the retry.

    .. versionadded:: 0.1
    """

    def decorate(body: F) -> F:
        if inspect.iscoroutinefunction(body) or inspect.isasyncgenfunction(body):
            raise TypeError(_not_async(body))

        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> Any:
            intent_id = id_of(*args, **kwargs) if id_of is not None else current_intent_id()
            if not intent_id:
                raise RuntimeError(
                    f"deduplicate: no intent id for this run of {body.__name__}; run it from a Celery task, a "
                    "Dramatiq actor (with the CurrentMessage middleware) or a django.tasks task declared with "
                    "airlock_task (and sent through the outbox), or pass id_of="
                )
            with transaction.atomic(using=using):
                if not first_delivery(intent_id, using=using):
                    _log.info(
                        "airlock outbox: %s already ran intent %s; this delivery is dropped", body.__name__, intent_id
                    )
                    return None
                result = body(*args, **kwargs)
                if inspect.isawaitable(result):  # async under a sync face (a partial, a wrapper)
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()  # never started: no "never awaited" warning
                    raise TypeError(_not_async(body))  # inside the atomic block: the record rolls back
                return result

        return run  # type: ignore[return-value]

    return decorate if function is None else decorate(function)


def _not_async(body: Any) -> str:
    name = getattr(body, "__qualname__", None) or repr(body)
    return (
        f"deduplicate records the intent id and runs the body in one transaction, and {name} is async: "
        "its work would run after that transaction closed, so a run that failed would keep its id "
        "recorded and the retry would be dropped. Decorate a sync function (run the async part inside "
        "it with asgiref's async_to_sync), or call first_delivery(intent_id) inside your own transaction"
    )
