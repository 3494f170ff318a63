"""The Celery executor: send each intent as a Celery task message.

``celery_executor`` calls ``task.apply_async(args=..., kwargs=..., **options)`` for a
Celery task, ``task.delay(*args, **kwargs)`` for anything that only has
``delay``, and calls a plain function in-process. ``_dispatch_options`` become
``apply_async`` options, checked by name first so a typo fails loudly instead of
turning into a message property nobody reads.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, final

try:
    from celery import Celery  # type: ignore[import-untyped]  # Celery ships no type hints
    from celery.app.task import Task  # type: ignore[import-untyped]
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("airlock.integrations.executors.celery needs Celery: pip install 'airlock[celery]'") from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._propagation import inject
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["CELERY_OPTIONS", "celery_executor", "publishing"]


def _parameters(function: Any, *, leave_out: set[str]) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    } - leave_out


# Every name ``apply_async`` really uses. Celery passes leftover keywords on as
# AMQP message properties without complaint, so the list is explicit: the named
# parameters of ``Task.apply_async`` and ``Celery.send_task`` (read from the
# installed Celery, so new ones are accepted), the options the message builder and
# router read, and kombu's publish arguments and standard message properties.
# ``args``/``kwargs`` come from the intent; the others left out are set by Celery itself.
CELERY_OPTIONS: frozenset[str] = frozenset(
    _parameters(Task.apply_async, leave_out={"self", "args", "kwargs"})
    | _parameters(Celery.send_task, leave_out={"self", "name", "args", "kwargs", "result_cls", "task_type"})
    | {
        # the message (celery.app.amqp.AMQP.as_task_v2)
        "origin",
        "argsrepr",
        "kwargsrepr",
        "stamped_headers",
        "ignore_result",
        # routing and publishing (AMQP.send_task_message, kombu.Producer.publish)
        "queue",
        "exchange",
        "exchange_type",
        "routing_key",
        "priority",
        "serializer",
        "compression",
        "delivery_mode",
        "headers",
        "retry",
        "retry_policy",
        "declare",
        "timeout",
        "confirm_timeout",
        "mandatory",
        "immediate",
        "event_dispatcher",
        # standard AMQP message properties
        "content_type",
        "content_encoding",
        "correlation_id",
        "message_id",
        "user_id",
        "app_id",
        "expiration",
    }
)
"""The ``_dispatch_options`` names :func:`celery_executor` accepts.

.. versionadded:: 0.1
"""

# The open ``publishing()`` block, if any.
_batch: ContextVar[_Batch | None] = ContextVar("airlock.celery.batch", default=None)

# Set while the executor hands a message to Celery, so the migration shim
# (airlock.integrations.celery) lets that call through to the real apply_async.
passthrough: ContextVar[bool] = ContextVar("airlock.celery.passthrough", default=False)


def celery_executor(intent: Intent) -> Any:
    """Send the intent through Celery and return what Celery hands back.

    - A task with ``apply_async`` (any Celery task or signature-like object):
      ``task.apply_async(args=intent.args, kwargs=intent.kwargs, **options)``, by
      keyword as airlock-py calls it (tests that assert the call on a mock keep
      passing); the
      ``AsyncResult`` travels on ``intent_dispatched`` as ``result``.
    - Else a task with ``delay``: ``task.delay(*args, **kwargs)`` (no options possible).
    - Else a plain callable: called in-process, like the sync executor.

    ``_dispatch_options`` are Celery's own ``apply_async`` options (``countdown``,
    ``eta``, ``expires``, ``queue``, ``priority``, ``headers``, ...; see
    :data:`CELERY_OPTIONS`). When a tracing integration is on, the current trace
    context is added to the message ``headers`` (your own ``headers`` win on a clash).

    Raises:
        TypeError: An option name Celery does not take, or options for a task
            that only has ``delay()``.

    .. versionadded:: 0.1
    """
    task = intent.task
    options = intent.dispatch_options
    if options:
        _check_options(options, intent)
    apply_async = getattr(task, "apply_async", None)
    if apply_async is None:
        delay = getattr(task, "delay", None)
        if delay is None:
            return sync_executor(intent)
        if options:
            raise TypeError(
                f"{intent.name} has .delay() but no .apply_async(), so its "
                f"_dispatch_options {sorted(options)} cannot be passed; drop them or use a Celery task"
            )
        return _send(delay, *intent.args, **intent.kwargs)
    options = _with_trace_headers(options)
    batch = _batch.get()
    if batch is not None and not (options and ("producer" in options or "connection" in options)):
        return batch.send(task, apply_async, intent.args, intent.kwargs, options)
    if options:
        return _send(apply_async, args=intent.args, kwargs=intent.kwargs, **options)
    return _send(apply_async, args=intent.args, kwargs=intent.kwargs)


def _send(method: Any, /, *args: Any, **options: Any) -> Any:
    token = passthrough.set(True)
    try:
        return method(*args, **options)
    finally:
        passthrough.reset(token)


def _with_trace_headers(options: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if hooks.inject_trace is None:
        return options
    carrier: dict[str, Any] = {}
    inject(carrier)
    if not carrier:
        return options
    if options is None:
        return {"headers": carrier}
    return {**options, "headers": {**carrier, **(options.get("headers") or {})}}


def _check_options(options: Mapping[str, Any], intent: Intent) -> None:
    if not options.keys() - CELERY_OPTIONS:
        return
    # Stamps (Celery's canvas stamping) are named by the ``stamped_headers`` option.
    stamps = set(options.get("stamped_headers") or ())
    reject_unknown_options(
        "celery_executor",
        {name: value for name, value in options.items() if name not in stamps},
        CELERY_OPTIONS,
        intent.name,
        "Celery's apply_async takes countdown, eta, expires, queue, priority, headers, ... "
        "(see airlock.integrations.executors.celery.CELERY_OPTIONS)",
    )


@final
class _Batch:
    """The producers a ``publishing()`` block borrowed, one per Celery app."""

    __slots__ = ("_held", "_is_broken")

    def __init__(self) -> None:
        self._held: dict[Any, tuple[Any, ExitStack]] = {}
        self._is_broken = False

    def send(self, task: Any, apply_async: Any, args: Any, kwargs: Any, options: Any) -> Any:
        app = getattr(task, "app", None)
        if app is None or self._is_broken:
            return _send(apply_async, args=args, kwargs=kwargs, **(options or {}))
        held = self._held.get(app)
        if held is None:
            held = self._held[app] = self._borrow(app)
        try:
            return _send(apply_async, args=args, kwargs=kwargs, **(options or {}), producer=held[0])
        except Exception:
            # Back to Celery's own path (and its publish retry policy) for this
            # message and the rest of the block, exactly as without publishing().
            self._is_broken = True
            self.close(sys.exc_info())
            return _send(apply_async, args=args, kwargs=kwargs, **(options or {}))

    @staticmethod
    def _borrow(app: Any) -> tuple[Any, ExitStack]:
        stack = ExitStack()
        producer = stack.enter_context(app.producer_or_acquire())
        # kombu 5.7+ can keep one Redis client for many publishes. A batch of one
        # command still sends each message before apply_async returns, so a
        # failure belongs to the intent that caused it, as without a batch.
        if getattr(producer, "supports_batch_publish", False):
            stack.enter_context(producer.batch(max_size=1))
        return producer, stack

    def close(self, exc_info: Any = (None, None, None)) -> None:
        held, self._held = self._held, {}
        for _producer, stack in held.values():
            stack.__exit__(*exc_info)


@contextmanager
def publishing() -> Iterator[None]:
    """Publish the messages ``celery_executor`` sends in the block over one producer per app.

    Without it every message borrows a producer (and, on Redis, a client) from
    the app's pool and gives it back. Inside it, the first message for an app
    borrows one and keeps it until the block ends, which makes a large flush
    publish markedly faster. What is sent does not change: each intent is still
    its own message, sent before the executor returns, with its own
    ``AsyncResult`` on its own ``intent_dispatched`` event. If a publish fails, the
    block stops reusing the producer and Celery's usual path (with its publish
    retry policy) takes over. Wrap the scope in it, so its flush happens inside::

        with publishing(), airlock.scope(executor=celery_executor):
            ...

    ``AirlockTask`` does this for its own scope.

    .. versionadded:: 0.1
    """
    batch = _Batch()
    token = _batch.set(batch)
    try:
        yield
    finally:
        _batch.reset(token)
        batch.close()
