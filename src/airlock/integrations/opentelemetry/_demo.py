"""A self-contained trace of deferred dispatch, printed as a waterfall.

``python -m airlock.integrations.opentelemetry`` runs a request that enqueues two
tasks inside a database transaction; the scope holds them until the commit, a
queue carries them (with the trace context) to a worker thread, and the worker
runs each in the same trace. No broker or tracing backend is needed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

import airlock
from airlock import _propagation
from airlock._intent import Intent
from airlock.integrations.opentelemetry._instrumentor import AirlockInstrumentor
from airlock.integrations.opentelemetry._waterfall import print_waterfall

__all__ = ["demo", "record_demo_trace"]


class _Transaction:
    """A stand-in for a database transaction with ``on_commit`` callbacks."""

    current: _Transaction | None = None

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []


class _OnCommitScope(airlock.Scope):
    """Holds flushed intents until the surrounding transaction commits, like ``DjangoScope``."""

    def schedule_dispatch(self, intents: list[Intent]) -> None:
        transaction = _Transaction.current
        if transaction is None:
            self._release(intents)
        else:
            transaction.callbacks.append(lambda: self._release(intents))


class _Sent:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id


def _queue_executor(messages: queue.Queue[dict[str, Any] | None]) -> Callable[[Intent], _Sent]:
    def send(intent: Intent) -> _Sent:
        message = {"id": intent.id, "task": intent.task, "args": intent.args, "kwargs": intent.kwargs}
        message["headers"] = _propagation.inject({})
        messages.put(message)
        return _Sent(intent.id)

    send.messaging_system = "demo"  # type: ignore[attr-defined]
    return send


def _worker(messages: queue.Queue[dict[str, Any] | None]) -> None:
    while (message := messages.get()) is not None:
        task = message["task"]
        with _propagation.continue_trace(message["headers"], name=task.__name__, system="demo"):
            with airlock.scope():  # the task's run is a scope of its own
                task(*message["args"], **message["kwargs"])


def _work(tracer: Tracer, name: str, seconds: float) -> None:
    with tracer.start_as_current_span(name):
        time.sleep(seconds)


def record_demo_trace() -> list[ReadableSpan]:
    """Run the demo request and worker, and return their finished spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("airlock.demo")
    messages: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def send_confirmation(order_id: int) -> None:
        _work(tracer, "render email", 0.002)

    def notify_warehouse(order_id: int) -> None:
        _work(tracer, "POST /warehouse", 0.003)

    instrumentor = AirlockInstrumentor()
    was_on = instrumentor.is_instrumented_by_opentelemetry
    if not was_on:
        instrumentor.instrument(tracer_provider=provider, meter_provider=NoOpMeterProvider())
    worker = threading.Thread(target=_worker, args=(messages,), name="demo-worker")
    worker.start()
    try:
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            with _transaction(tracer):
                with airlock.scope(_cls=_OnCommitScope, executor=_queue_executor(messages)):
                    _work(tracer, "INSERT order", 0.002)
                    airlock.enqueue(send_confirmation, 7, _origin="Order.save")
                    _work(tracer, "INSERT order_line", 0.001)
                    airlock.enqueue(notify_warehouse, 7, _origin="Order.save")
                _work(tracer, "UPDATE stock", 0.003)
            _work(tracer, "render response", 0.001)
    finally:
        messages.put(None)
        worker.join(timeout=10)
        if not was_on:
            instrumentor.uninstrument()
    return list(exporter.get_finished_spans())


@contextmanager
def _transaction(tracer: Tracer) -> Iterator[None]:
    transaction = _Transaction.current = _Transaction()
    try:
        with tracer.start_as_current_span("transaction"):
            yield
            _work(tracer, "COMMIT", 0.001)
    finally:
        _Transaction.current = None
    for callback in transaction.callbacks:
        callback()


def demo(file: IO[str] | None = None) -> None:
    """Print the waterfall of :func:`record_demo_trace` to ``file`` (default stdout)."""
    print_waterfall(record_demo_trace(), file=file)
