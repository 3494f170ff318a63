"""The Dramatiq executor: send each intent as a Dramatiq message.

``dramatiq_executor`` calls ``actor.send_with_options(args=..., kwargs=..., **options)``
for a Dramatiq actor, ``actor.send(*args, **kwargs)`` for anything that only has
``send``, and calls a plain function in-process. ``_dispatch_options`` become
message options, checked by name first: Dramatiq stores any option on the message
without complaint, so a typo would otherwise be silently ignored by every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

try:
    import dramatiq
    import dramatiq.errors
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.executors.dramatiq needs Dramatiq: pip install 'airlock-dispatch[dramatiq]'"
    ) from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._propagation import inject
from airlock.integrations.executors import _deadline
from airlock.integrations.executors._checks import check_arguments, is_plain, snapshot
from airlock.integrations.executors._deadline import DEFAULT_PUBLISH_TIMEOUT
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["MESSAGE_OPTIONS", "TRACE_OPTION", "dramatiq_executor", "make_dramatiq_executor"]

TRACE_OPTION = "airlock_trace"
"""The message option that carries the trace context to the worker.

Set only while a tracing integration is instrumented; the worker side
(:class:`airlock.integrations.dramatiq.AirlockMiddleware`) reads it.

.. versionadded:: 0.1
"""

MESSAGE_OPTIONS: frozenset[str] = frozenset({"delay", "broker_priority"})
"""Options every Dramatiq broker takes, on top of its middleware's ``actor_options``.

``delay`` (milliseconds, or a ``timedelta``) is the argument of
``send_with_options``; ``broker_priority`` is the per-message priority the
RabbitMQ broker reads. Everything else a message can carry (``max_retries``,
``time_limit``, ``on_success``, ...) is declared by the broker's middleware
and read from ``actor.broker.actor_options`` at dispatch.

.. versionadded:: 0.1
"""


def dramatiq_executor(intent: Intent) -> Any:
    """Send the intent through Dramatiq and return what Dramatiq hands back.

    - An actor (anything with ``send_with_options``):
      ``actor.send_with_options(args=..., kwargs=..., **options)``; the
      :class:`dramatiq.Message` travels on ``intent_dispatched`` as ``result``.
    - Else anything with ``send``: ``task.send(*args, **kwargs)`` (no options possible).
    - Else a plain callable: called in-process, like the sync executor.

    ``_dispatch_options`` are ``delay`` (milliseconds or a ``timedelta``),
    ``broker_priority`` (RabbitMQ) and the message options the actor's broker
    middleware declares (``max_retries``, ``min_backoff``, ``time_limit``,
    ``max_age``, ``on_success``, ...). When a tracing integration is on, the
    current trace context travels in the :data:`TRACE_OPTION` message option.

    Each publish waits at most about :data:`DEFAULT_PUBLISH_TIMEOUT` seconds
    (see :func:`make_dramatiq_executor`).

    Raises:
        TypeError: An option name the actor's broker does not know, or options for
            something that cannot take them (a ``send``-only object, a plain function).

    .. versionadded:: 0.1
    """
    return _dispatch(intent, DEFAULT_PUBLISH_TIMEOUT)


def make_dramatiq_executor(*, timeout: float = DEFAULT_PUBLISH_TIMEOUT) -> Callable[[Intent], Any]:
    """A :func:`dramatiq_executor` whose publishes give up after ``timeout`` seconds.

    The bound is set on the actor's broker, the first time the executor sends to
    it: a Redis broker's connection pool gets connect and socket timeouts and no
    retries; a RabbitMQ broker's pika parameters get ``socket_timeout``,
    ``stack_timeout`` and ``blocked_connection_timeout``, with one connection
    attempt. After a broker cannot be reached, the other intents of the flush for
    it fail at once (see :class:`~airlock.integrations.executors.BrokerUnavailableError`).

    Args:
        timeout: Seconds, above 0.

    Raises:
        ValueError: ``timeout`` is not a positive number.

    .. versionadded:: 0.1
    """
    return _deadline.with_timeout(_dispatch, timeout, "make_dramatiq_executor", dramatiq_executor)


def _dispatch(intent: Intent, timeout: float) -> Any:
    task = intent._task
    options = intent.dispatch_options
    send_with_options = getattr(task, "send_with_options", None)
    if send_with_options is not None:
        if options:
            _check_options(options, intent)
        if hooks.inject_trace is not None:
            options = _with_trace(options)

        def publish() -> Any:
            if options:
                return send_with_options(args=intent._args, kwargs=intent._kwargs, **options)
            return send_with_options(args=intent._args, kwargs=intent._kwargs)

        broker = getattr(task, "broker", None)
        if broker is None:
            return publish()
        timeout = _deadline.timeout_for(timeout)
        _bound(broker, timeout)
        return _deadline.guarded(broker, timeout, intent.name, publish, _is_unreachable)
    if options:
        _refuse_options(intent, options)
    send = getattr(task, "send", None)
    if send is not None:
        return send(*intent._args, **intent._kwargs)
    return sync_executor(intent)


def _check_at_enqueue(intent: Intent) -> Intent | None:
    """``dramatiq_executor.check_enqueue``: options, arguments and their snapshot, at enqueue.

    The arguments must fit the actor's function and survive Dramatiq's encoder
    (``dramatiq.get_encoder()``, JSON unless you set another); what comes back
    from it is what is sent.
    """
    task = intent._task
    options = intent.dispatch_options
    if getattr(task, "send_with_options", None) is None:
        if options:
            _refuse_options(intent, options)
        return None
    if options:
        _check_options(options, intent)
    fn = getattr(task, "fn", None)
    check_arguments("dramatiq_executor", intent, fn)
    if is_plain(intent):
        return None
    encoder = dramatiq.get_encoder()
    kind = "JSON" if type(encoder) is dramatiq.JSONEncoder else type(encoder).__name__

    def round_trip(data: Any) -> Any:
        decoded = encoder.decode(encoder.encode({"args": data[0], "kwargs": data[1]}))
        return decoded["args"], decoded["kwargs"]

    return snapshot("dramatiq_executor", intent, round_trip, kind, fn)


dramatiq_executor.check_enqueue = _check_at_enqueue  # type: ignore[attr-defined]


def _refuse_options(intent: Intent, options: Mapping[str, Any]) -> None:
    kind = "has .send() but no .send_with_options()" if hasattr(intent._task, "send") else "is not an actor"
    raise TypeError(
        f"dramatiq_executor: {intent.name} {kind}, so its _dispatch_options "
        f"{sorted(options)} cannot be applied; drop them or enqueue a Dramatiq actor"
    )


def _with_trace(options: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    carrier = inject({})
    if not carrier:
        return options
    return {**(options or {}), TRACE_OPTION: carrier}


def _check_options(options: Mapping[str, Any], intent: Intent) -> None:
    declared = getattr(getattr(intent.task, "broker", None), "actor_options", None)
    if not isinstance(declared, (AbstractSet, list, tuple)):
        # Not a Dramatiq broker (a stand-in actor in a test): nothing says what it takes.
        return
    known = MESSAGE_OPTIONS | frozenset(declared)
    takes = f"its broker takes {', '.join(sorted(known))}."
    if "priority" in options:
        # Dramatiq's priority belongs to the actor; only RabbitMQ has one per message.
        takes += (
            " Dramatiq sets priority per actor (@dramatiq.actor(priority=...)); "
            "for a per-message RabbitMQ priority use 'broker_priority'."
        )
    reject_unknown_options("dramatiq_executor", options, known, intent.name, takes)


def _bound(broker: Any, timeout: float) -> None:
    """Give ``broker``'s connections our timeouts and no retries (once per timeout)."""
    if getattr(broker, "_airlock_timeout", None) == timeout:
        return
    client = getattr(broker, "client", None)
    pool = getattr(client, "connection_pool", None)
    if pool is not None and hasattr(pool, "connection_kwargs"):
        _deadline.bound_redis_pool(pool, timeout)
    parameters = getattr(broker, "parameters", None)
    if parameters is not None:
        for each in parameters if isinstance(parameters, list) else [parameters]:
            # pika: one connection attempt, each step of it and each blocked
            # publish bounded. Dramatiq still tries a failed enqueue six times,
            # but over a refused connection each try is immediate.
            each.socket_timeout = timeout
            each.stack_timeout = timeout
            each.blocked_connection_timeout = timeout
            each.connection_attempts = 1
            each.retry_delay = 0
    broker._airlock_timeout = timeout


def _is_unreachable(error: BaseException) -> bool:
    return _deadline.any_cause(error, _CONNECTION_ERRORS)


def _connection_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [OSError, dramatiq.errors.BrokerConnectionError]
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - Dramatiq on RabbitMQ only
        pass
    else:
        found += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    try:
        import pika.exceptions  # type: ignore[import-untyped]  # pika ships no type hints
        from pika.adapters.utils.connection_workflow import AMQPConnectorException  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - Dramatiq on Redis only
        pass
    else:
        # AMQPConnectorException: a step of connecting timed out (a frozen broker);
        # pika raises it bare, not as an AMQPConnectionError.
        found += [pika.exceptions.AMQPConnectionError, AMQPConnectorException]
    return tuple(found)


_CONNECTION_ERRORS = _connection_errors()
