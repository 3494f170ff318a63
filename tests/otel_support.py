"""An OpenTelemetry SDK wired to in-memory exporters, for the observability tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import airlock
from airlock.integrations.opentelemetry import AirlockInstrumentor


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans]}"
        return found[0]

    def metric_points(self) -> dict[str, list[Any]]:
        """Metric name -> its data points (counters: sums; histogram: counts and sums)."""
        data = self.reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def total(self, name: str) -> float:
        return sum(point.value for point in self.metric_points().get(name, []))


@contextmanager
def instrumented() -> Iterator[Telemetry]:
    """Instrument airlock with a fresh SDK tracer and meter provider, and undo it after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = AirlockInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=meter_provider)
    try:
        yield Telemetry(exporter, reader, provider)
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
        provider.shutdown()


def wait_for_consumer(telemetry: Telemetry, trace_id: int, timeout: float = 15.0) -> ReadableSpan:
    """Poll until a finished CONSUMER span of ``trace_id`` appears (the worker's run)."""
    deadline = time.monotonic() + timeout
    while True:
        for span in telemetry.spans:
            if span.kind is SpanKind.CONSUMER and span.context.trace_id == trace_id:
                return span
        if time.monotonic() > deadline:
            names = [(span.name, f"{span.context.trace_id:032x}") for span in telemetry.spans]
            raise AssertionError(f"no consumer span in trace {trace_id:032x} after {timeout}s; spans: {names}")
        time.sleep(0.02)


def request_enqueuing(telemetry: Telemetry, executor: Any, task: Any, *args: Any) -> ReadableSpan:
    """A server span whose scope enqueues ``task(*args)`` through ``executor``; returns the span."""
    tracer = telemetry.tracer_provider.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        with airlock.scope(executor=executor):
            airlock.enqueue(task, *args)
    return request  # type: ignore[return-value]


def assert_worker_continued(telemetry: Telemetry, request: Any, *, system: str) -> ReadableSpan:
    """The worker's run joined the request's trace, under airlock's dispatch span.

    Returns the worker's consumer span. Exactly one consumer span and one airlock
    dispatch span exist in the trace (no duplicates), and the worker's task-run
    scope span hangs below the consumer span.
    """
    trace_id = request.get_span_context().trace_id
    consumer = wait_for_consumer(telemetry, trace_id)
    in_trace = [span for span in telemetry.spans if span.context.trace_id == trace_id]
    sends = [span for span in in_trace if span.name.startswith("send ") and span.kind is SpanKind.PRODUCER]
    consumers = [span for span in in_trace if span.kind is SpanKind.CONSUMER]
    assert len(sends) == 1, [span.name for span in in_trace]
    assert len(consumers) == 1, [span.name for span in in_trace]
    (send,) = sends
    assert send.attributes["messaging.system"] == system
    assert ancestors(consumer, in_trace)[-1].name == "POST /orders"
    assert send in ancestors(consumer, in_trace)
    task_scopes = [s for s in in_trace if s.name == "airlock.scope" and s.parent.span_id == consumer.context.span_id]
    assert len(task_scopes) == 1, "the worker's task-run scope runs inside the consumer span"
    return consumer


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The chain of parents of ``span`` found in ``spans``, nearest first."""
    by_id = {s.context.span_id: s for s in spans}
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


@dataclass
class Hop:
    """One request-to-worker journey: the token the task got and the spans it left."""

    token: str
    request: Any
    consumer: ReadableSpan
    send: ReadableSpan


def send_through_worker(telemetry: Telemetry, executor: Any, task: Any, *, system: str) -> Hop:
    """Enqueue ``task(token)`` in a traced request and wait until the worker's run joined it."""
    token = uuid.uuid4().hex
    request = request_enqueuing(telemetry, executor, task, token)
    consumer = assert_worker_continued(telemetry, request, system=system)
    trace_id = request.get_span_context().trace_id
    send = next(s for s in telemetry.spans if s.name.startswith("send ") and s.context.trace_id == trace_id)
    return Hop(token, request, consumer, send)
