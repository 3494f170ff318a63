"""Celery: the worker's run joins the request's trace, over a real broker and a real worker.

Proven with airlock alone and with opentelemetry-instrumentation-celery instrumented
too: either way there is one dispatch span, one consumer span, and unbroken parentage.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind

from airlock.integrations.celery import AirlockTask
from airlock.integrations.executors.celery import celery_executor
from tests.celery_support import RABBITMQ_URL, REDIS_URL, serving
from tests.conftest import require_service
from tests.otel_support import Telemetry, instrumented, send_through_worker

pytestmark = [
    pytest.mark.one_lane,  # a real broker and worker: the same Celery on every lane
    pytest.mark.filterwarnings(
        # kombu's RabbitMQ transport still calls datetime.utcnow() on this Python.
        "ignore:datetime.datetime.utcnow:DeprecationWarning",
    ),
]

RUN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
QUEUE = f"airlock-otel-celery-{RUN}"
KEYPREFIX = f"airlock-otel-celery-{RUN}:"

# What the task saw while it ran, by token: the worker thread writes, the test reads.
SEEN: dict[str, dict[str, Any]] = {}
SEEN_LOCK = threading.Lock()


def make_app(broker: str) -> tuple[Celery, Any]:
    app = Celery(f"airlock_otel_{broker}", set_as_current=False)
    app.conf.update(
        broker_url=REDIS_URL if broker == "redis" else RABBITMQ_URL,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": KEYPREFIX} if broker == "redis" else {},
    )

    @app.task(name="airlock_otel.traced", bind=True, base=AirlockTask, shared=False)
    def traced(self: Any, token: str) -> None:
        with SEEN_LOCK:
            SEEN[token] = {
                "trace_id": trace.get_current_span().get_span_context().trace_id,
                "headers": dict(self.request.headers or {}),
            }

    return app, traced


@pytest.fixture(scope="module", params=["redis", "rabbitmq"], ids=["redis", "rabbitmq"])
def worker(request: pytest.FixtureRequest) -> Iterator[Any]:
    require_service(request.param)
    app, traced = make_app(request.param)
    try:
        with serving(app, [QUEUE]):
            yield traced
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(QUEUE)


@pytest.fixture(params=[False, True], ids=["airlock-only", "with-CeleryInstrumentor"])
def otel(request: pytest.FixtureRequest) -> Iterator[Telemetry]:
    with instrumented() as telemetry:
        if not request.param:
            yield telemetry
            return
        celery_instrumentor = CeleryInstrumentor()
        celery_instrumentor.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=NoOpMeterProvider())
        try:
            yield telemetry
        finally:
            celery_instrumentor.uninstrument()


def test_worker_run_joins_the_request_trace(worker: Any, otel: Telemetry) -> None:
    hop = send_through_worker(otel, celery_executor, worker, system="celery")
    token, request, consumer, send = hop.token, hop.request, hop.consumer, hop.send
    trace_id = request.get_span_context().trace_id
    assert SEEN[token]["trace_id"] == trace_id  # the task body ran inside the trace
    assert "traceparent" in SEEN[token]["headers"]  # carried in the message's headers
    in_trace = [span for span in otel.spans if span.context.trace_id == trace_id]
    if CeleryInstrumentor().is_instrumented_by_opentelemetry:
        # Celery's instrumentation owns the wire: its publish span sits under airlock's
        # dispatch span, and its run span is the worker's one consumer span.
        publish = next(span for span in in_trace if span.name.startswith("apply_async/"))
        assert publish.parent.span_id == send.context.span_id
        assert consumer.name == "run/airlock_otel.traced"
        assert consumer.parent.span_id == publish.context.span_id
        assert [span.name for span in in_trace if span.name.startswith("process ")] == []
    else:
        assert consumer.name == "process airlock_otel.traced"
        assert consumer.parent.span_id == send.context.span_id
        assert consumer.attributes["messaging.system"] == "celery"
        assert [span.kind for span in in_trace].count(SpanKind.PRODUCER) == 1
    assert send.attributes["messaging.message.id"]
