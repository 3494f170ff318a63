"""Carrying trace context from the enqueueing process into the worker.

Executors call :func:`inject` with the message's carrier (Celery headers, Dramatiq
message options, ...); task-run scopes wrap the run in :func:`continue_trace`.
Both do nothing until a tracing integration (``airlock.integrations.opentelemetry``)
switches them on, so the queue integrations never import a tracer themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from airlock._context import hooks

__all__ = ["continue_trace", "inject", "is_enabled"]


def is_enabled() -> bool:
    """Whether a tracing integration is instrumented (so carriers are worth building)."""
    return hooks.inject_trace is not None


def inject(carrier: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Write the current trace context into ``carrier`` (if tracing is on) and return it."""
    write = hooks.inject_trace
    if write is not None:
        write(carrier)
    return carrier


@contextmanager
def continue_trace(carrier: Mapping[str, Any] | None, *, name: str, system: str) -> Iterator[None]:
    """Run the block inside the trace found in ``carrier`` (if tracing is on).

    Args:
        carrier: The message's carrier, as :func:`inject` filled it (may be ``None``).
        name: The task's name, for the worker-side span.
        system: The queue library (``celery``, ``dramatiq``, ``huey``, ``django_q``).
    """
    enter = hooks.continue_trace
    if enter is None:
        yield
        return
    with enter(carrier or {}, name=name, system=system):
        yield
