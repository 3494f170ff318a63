"""The Dramatiq executor: send each intent as a Dramatiq message.

``dramatiq_executor`` calls ``actor.send_with_options(args=..., kwargs=..., **options)``
for a Dramatiq actor, ``actor.send(*args, **kwargs)`` for anything that only has
``send``, and calls a plain function in-process. ``_dispatch_options`` become
message options, checked by name first: Dramatiq stores any option on the message
without complaint, so a typo would otherwise be silently ignored by every worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

try:
    import dramatiq  # noqa: F401 - imported to fail early, naming the extra to install
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.executors.dramatiq needs Dramatiq: pip install 'airlock[dramatiq]'"
    ) from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._propagation import inject
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["MESSAGE_OPTIONS", "TRACE_OPTION", "dramatiq_executor"]

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

    Raises:
        TypeError: An option name the actor's broker does not know, or options for
            something that cannot take them (a ``send``-only object, a plain function).

    .. versionadded:: 0.1
    """
    task = intent._task
    options = intent.dispatch_options
    send_with_options = getattr(task, "send_with_options", None)
    if send_with_options is not None:
        if options:
            _check_options(options, intent)
        if hooks.inject_trace is not None:
            options = _with_trace(options)
        if options:
            return send_with_options(args=intent._args, kwargs=intent._kwargs, **options)
        return send_with_options(args=intent._args, kwargs=intent._kwargs)
    if options:
        kind = "has .send() but no .send_with_options()" if hasattr(task, "send") else "is not an actor"
        raise TypeError(
            f"dramatiq_executor: {intent.name} {kind}, so its _dispatch_options "
            f"{sorted(options)} cannot be applied; drop them or enqueue a Dramatiq actor"
        )
    send = getattr(task, "send", None)
    if send is not None:
        return send(*intent._args, **intent._kwargs)
    return sync_executor(intent)


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
