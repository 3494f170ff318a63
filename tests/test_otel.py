"""The OpenTelemetry instrumentor: spans, links, propagation hooks and metrics (in-memory SDK)."""

from __future__ import annotations

import http.server
import itertools
import threading
import time

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

import airlock
from airlock import _context, _propagation, signals
from airlock.integrations.opentelemetry import AirlockInstrumentor, instrument, uninstrument
from airlock.integrations.opentelemetry._instrumentor import SCOPE_SPAN
from tests.otel_support import Telemetry, instrumented


@pytest.fixture
def otel():
    with instrumented() as telemetry:
        yield telemetry


def send_email(order_id: int) -> str:
    return f"sent {order_id}"


def notify(order_id: int) -> None:
    pass


class Sent:
    """What a queue executor returns: something carrying the broker's message id."""

    def __init__(self, id: str) -> None:
        self.id = id


def queue_executor(intent: airlock.Intent) -> Sent:
    return Sent(f"msg-{intent.args[0]}")


queue_executor.messaging_system = "testqueue"  # type: ignore[attr-defined]


def tracer(otel: Telemetry) -> trace.Tracer:
    return otel.tracer_provider.get_tracer("test")


# -- the scope span -------------------------------------------------------------------


def test_scope_span_covers_the_scope_and_carries_outcome_and_counts(otel):
    with airlock.scope(airlock.BlockTasks(["notify"])) as scope:
        first = airlock.enqueue(send_email, 1, _origin="checkout")
        airlock.enqueue(notify, 1)
    span = otel.one(SCOPE_SPAN)
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes["airlock.scope.id"] == scope.id
    assert span.attributes["airlock.scope.outcome"] == "flushed"
    assert span.attributes["airlock.scope.intents.enqueued"] == 2
    assert span.attributes["airlock.scope.intents.dropped"] == 1
    assert span.attributes["airlock.scope.intents.flushed"] == 1
    enqueues = [event for event in span.events if event.name == "airlock.enqueue"]
    assert [event.attributes["airlock.intent.name"] for event in enqueues] == ["send_email", "notify"]
    assert enqueues[0].attributes["airlock.intent.id"] == first.id
    assert enqueues[0].attributes["airlock.intent.origin"] == "checkout"
    assert enqueues[0].timestamp == first.enqueued_at_ns
    assert [event.name for event in span.events][-1] == "airlock.drop"


def test_discarded_scope_span_records_the_error(otel):
    with pytest.raises(ValueError), airlock.scope():
        airlock.enqueue(send_email, 1)
        raise ValueError("payment declined")
    span = otel.one(SCOPE_SPAN)
    assert span.attributes["airlock.scope.outcome"] == "discarded"
    assert span.attributes["airlock.scope.intents.discarded"] == 1
    assert span.status.status_code is StatusCode.ERROR
    assert "payment declined" in span.status.description
    assert any(event.name == "exception" for event in span.events)
    assert otel.named("send send_email") == []


def test_scope_span_is_current_inside_the_block_and_restored_after(otel):
    with tracer(otel).start_as_current_span("request") as request:
        with airlock.scope():
            inside = trace.get_current_span()
        assert trace.get_current_span() is request
    assert otel.one(SCOPE_SPAN).context.span_id == inside.get_span_context().span_id
    assert otel.one(SCOPE_SPAN).parent.span_id == request.get_span_context().span_id


def test_nested_scope_spans_nest_and_captured_intents_are_marked(otel):
    with airlock.scope() as outer:
        with airlock.scope() as inner:
            intent = airlock.enqueue(send_email, 1)
    outer_span = next(s for s in otel.named(SCOPE_SPAN) if s.attributes["airlock.scope.id"] == outer.id)
    inner_span = next(s for s in otel.named(SCOPE_SPAN) if s.attributes["airlock.scope.id"] == inner.id)
    assert inner_span.parent.span_id == outer_span.context.span_id
    assert inner_span.attributes["airlock.scope.parent_id"] == outer.id
    assert inner_span.attributes["airlock.scope.intents.flushed"] == 0
    captured = [e for e in outer_span.events if e.name == "airlock.capture"]
    assert captured[0].attributes["airlock.intent.id"] == intent.id
    # Dispatched once, by the outer scope, under the span current at enqueue (the inner scope).
    send = otel.one("send send_email")
    assert send.parent.span_id == inner_span.context.span_id


# -- the dispatch span ----------------------------------------------------------------


def test_dispatch_span_follows_messaging_conventions(otel):
    with tracer(otel).start_as_current_span("request") as request:
        with airlock.scope(executor=queue_executor):
            with tracer(otel).start_as_current_span("Order.save") as save:
                intent = airlock.enqueue(send_email, 7, _dispatch_options={"queue": "emails"})
    span = otel.one("send send_email")
    assert span.kind is SpanKind.PRODUCER
    assert span.attributes["messaging.system"] == "testqueue"
    assert span.attributes["messaging.operation.type"] == "send"
    assert span.attributes["messaging.destination.name"] == "emails"
    assert span.attributes["messaging.message.id"] == "msg-7"
    assert span.attributes["airlock.intent.id"] == intent.id
    assert span.attributes["airlock.intent.held_ms"] >= 0
    # In the enqueue-time trace, child of the span current at enqueue, and linked to it.
    assert span.context.trace_id == request.get_span_context().trace_id
    assert span.parent.span_id == save.get_span_context().span_id
    assert [link.context.span_id for link in span.links] == [save.get_span_context().span_id]
    assert span.status.status_code is StatusCode.UNSET


def test_sync_executor_result_is_not_taken_for_a_message_id(otel):
    with airlock.scope():
        airlock.enqueue(send_email, 7)  # returns the string "sent 7"
    span = otel.one("send send_email")
    assert span.attributes["messaging.system"] == "sync"
    assert "messaging.message.id" not in span.attributes
    assert span.attributes["messaging.destination.name"] == "send_email"


def test_dispatch_span_is_current_while_the_executor_injects(otel):
    carriers = []

    def injecting_executor(intent):
        carriers.append(_propagation.inject({}))

    with airlock.scope(executor=injecting_executor):
        airlock.enqueue(send_email, 1)
    span = otel.one("send send_email")
    _, trace_id, span_id, _ = carriers[0]["traceparent"].split("-")
    assert int(trace_id, 16) == span.context.trace_id
    assert int(span_id, 16) == span.context.span_id


def test_deferred_dispatch_happens_later_in_the_enqueue_time_trace(otel):
    held = []

    class LaterScope(airlock.Scope):
        def schedule_dispatch(self, intents):
            held.extend(intents)

    with tracer(otel).start_as_current_span("request") as request:
        with airlock.scope(_cls=LaterScope) as scope:
            airlock.enqueue(send_email, 1)
    time.sleep(0.02)
    with tracer(otel).start_as_current_span("commit"):
        scope._release(held)
    scope_span = otel.one(SCOPE_SPAN)
    send = otel.one("send send_email")
    assert send.start_time > scope_span.end_time
    assert send.context.trace_id == request.get_span_context().trace_id
    assert send.parent.span_id == scope_span.context.span_id
    assert send.attributes["airlock.intent.held_ms"] >= 20


def test_failed_dispatch_records_the_error_and_restores_context(otel):
    def broken(intent):
        raise ConnectionError("broker down")

    with tracer(otel).start_as_current_span("request") as request:
        with pytest.raises(ConnectionError), airlock.scope(executor=broken):
            airlock.enqueue(send_email, 1)
        assert trace.get_current_span() is request
    span = otel.one("send send_email")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ConnectionError"
    exception = next(event for event in span.events if event.name == "exception")
    assert exception.attributes["exception.message"] == "broker down"
    assert otel.total("airlock.intents.failed") == 1


def test_each_intent_gets_its_own_dispatch_span_in_order(otel):
    with airlock.scope():
        for order_id in range(3):
            airlock.enqueue(send_email, order_id)
    sends = sorted(otel.named("send send_email"), key=lambda span: span.start_time)
    assert len(sends) == 3
    assert len({span.context.span_id for span in sends}) == 3
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(sends))


# -- the worker side ------------------------------------------------------------------


def test_continue_trace_opens_a_consumer_span_under_the_sent_message(otel):
    messages = []

    def executor(intent):
        messages.append(_propagation.inject({}))

    with airlock.scope(executor=executor):
        airlock.enqueue(send_email, 1)
    with _propagation.continue_trace(messages[0], name="send_email", system="testqueue"):
        with airlock.scope():
            pass
    send = otel.one("send send_email")
    process = otel.one("process send_email")
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert process.attributes["messaging.system"] == "testqueue"
    assert process.attributes["messaging.operation.type"] == "process"
    task_scope = next(s for s in otel.named(SCOPE_SPAN) if s.parent and s.parent.span_id == process.context.span_id)
    assert task_scope.context.trace_id == send.context.trace_id


def test_continue_trace_without_context_starts_a_new_trace(otel):
    with _propagation.continue_trace(None, name="orphan", system="testqueue"):
        pass
    process = otel.one("process orphan")
    assert process.parent is None
    assert process.links == ()


def test_continue_trace_defers_to_a_consumer_span_already_open_for_the_message(otel):
    """What opentelemetry-instrumentation-celery does: its run span is current already."""
    carrier: dict[str, str] = {}
    with tracer(otel).start_as_current_span("send"):
        _propagation.inject(carrier)
    sent = propagate.extract(carrier)
    with tracer(otel).start_as_current_span("run/send_email", context=sent, kind=SpanKind.CONSUMER):
        with _propagation.continue_trace(carrier, name="send_email", system="celery"):
            pass
    assert otel.named("process send_email") == []


def test_continue_trace_records_the_task_error(otel):
    with pytest.raises(KeyError), _propagation.continue_trace({}, name="boom", system="testqueue"):
        raise KeyError("missing")
    assert otel.one("process boom").status.status_code is StatusCode.ERROR


# -- metrics -------------------------------------------------------------------------------


def test_counters_and_held_histogram(otel):
    def broken(intent):
        raise RuntimeError("no")

    with airlock.scope(airlock.BlockTasks(["notify"])):
        airlock.enqueue(send_email, 1)
        airlock.enqueue(send_email, 2)
        airlock.enqueue(notify, 3)
    with pytest.raises(ValueError), airlock.scope():
        airlock.enqueue(notify, 4)
        raise ValueError
    with pytest.raises(RuntimeError), airlock.scope(executor=broken):
        airlock.enqueue(send_email, 5)
    assert otel.total("airlock.intents.enqueued") == 5
    assert otel.total("airlock.intents.dispatched") == 2
    assert otel.total("airlock.intents.dropped") == 1
    assert otel.total("airlock.intents.discarded") == 1
    assert otel.total("airlock.intents.failed") == 1
    (held,) = otel.metric_points()["airlock.intent.held"]
    assert held.count == 2
    assert held.attributes == {"airlock.intent.name": "send_email", "messaging.system": "sync"}
    dropped = otel.metric_points()["airlock.intents.dropped"][0]
    assert dropped.attributes == {"airlock.intent.name": "notify", "airlock.policy": "BlockTasks"}


def test_held_time_exemplars_point_at_the_dispatch_span(otel):
    with airlock.scope():
        airlock.enqueue(send_email, 1)
    send = otel.one("send send_email")
    (held,) = otel.metric_points()["airlock.intent.held"]
    assert [(e.trace_id, e.span_id) for e in held.exemplars] == [(send.context.trace_id, send.context.span_id)]


# -- switching on and off -------------------------------------------------------------------


HOT = {"intent_enqueued", "intent_released", "intent_dispatched"}


def test_instrument_sets_the_hooks_and_uninstrument_undoes_exactly_that():
    before = {signal: len(signal.receivers) for signal in signals.ALL}
    with instrumented():
        assert AirlockInstrumentor().is_instrumented_by_opentelemetry
        assert _propagation.is_enabled()
        assert _context.hooks.capture_trace_context is not None
        assert all(len(signal.receivers) == before[signal] + 1 for signal in signals.ALL)
        instrument()  # a second call changes nothing
        assert all(len(signal.receivers) == before[signal] + 1 for signal in signals.ALL)
    assert not AirlockInstrumentor().is_instrumented_by_opentelemetry
    assert {signal: len(signal.receivers) for signal in signals.ALL} == before
    assert _context.hooks.inject_trace is None
    assert _context.hooks.continue_trace is None
    assert _context.hooks.capture_trace_context is None
    uninstrument()  # and a second uninstrument is harmless


def test_without_an_sdk_only_cold_receivers_are_connected_until_one_is_set():
    """The no-op API records nothing, so the per-intent receivers wait for an SDK."""
    before = {signal: len(signal.receivers) for signal in signals.ALL}
    instrument()
    try:
        connected = {s.name: len(s.receivers) - before[s] for s in signals.ALL}
        assert connected == {name: 0 if name in HOT else 1 for name in connected}
        assert _context.hooks.capture_trace_context is None
        assert _propagation.is_enabled()
        # What setting a global SDK provider changes, seen through the switch airlock reads.
        tracing = AirlockInstrumentor()._tracing
        tracing.traces_on.get_global = TracerProvider
        with airlock.scope():
            pass
        assert all(len(s.receivers) == before[s] + 1 for s in signals.ALL)
        assert _context.hooks.capture_trace_context is not None
    finally:
        uninstrument()
    assert {signal: len(signal.receivers) for signal in signals.ALL} == before
    assert _context.hooks.capture_trace_context is None


def test_uninstrument_leaves_a_hook_someone_else_installed_since():
    def other_capture():
        return "other"

    instrument()
    _context.hooks.capture_trace_context = other_capture
    uninstrument()
    assert _context.hooks.capture_trace_context is other_capture


def test_no_spans_after_uninstrument():
    with instrumented() as telemetry:
        pass
    with airlock.scope():
        intent = airlock.enqueue(send_email, 1)
    assert telemetry.spans == []
    assert intent.trace_context is None


def test_enqueue_captures_the_current_context(otel):
    with tracer(otel).start_as_current_span("request") as request, airlock.scope(airlock.DropAll()):
        intent = airlock.enqueue(send_email, 1)
    assert trace.get_current_span(intent.trace_context).get_span_context().trace_id == (
        request.get_span_context().trace_id
    )


def test_no_op_api_keeps_airlock_working_and_adds_no_context():
    """Without an SDK, the global providers are no-ops: nothing to record or propagate."""
    instrument()
    try:
        ran = []
        with airlock.scope():
            airlock.enqueue(ran.append, 1)
        with pytest.raises(ValueError), airlock.scope():
            airlock.enqueue(ran.append, 2)
            raise ValueError
        assert ran == [1]
        assert _propagation.inject({}) == {}
        with _propagation.continue_trace({}, name="task", system="celery"):
            assert not trace.get_current_span().get_span_context().is_valid
    finally:
        uninstrument()


def test_a_broken_tracer_never_loses_intents(otel, monkeypatch):
    from airlock.integrations.opentelemetry import _instrumentor

    tracing = AirlockInstrumentor()._tracing

    def explode(*args, **kwargs):
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(tracing, "tracer", type("T", (), {"start_span": staticmethod(explode)})())
    ran = []
    with airlock.scope():
        airlock.enqueue(ran.append, 1)
        airlock.enqueue(ran.append, 2)
    assert ran == [1, 2]
    assert _instrumentor.trace.get_current_span() is trace.INVALID_SPAN


def test_otlp_export_honours_the_standard_environment(monkeypatch):
    """The documented set-up sends to OTEL_EXPORTER_OTLP_ENDPOINT (a local receiver here)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    received = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers.get("x-team"), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=shop")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-web")
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    instrumentor = AirlockInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with airlock.scope():
            airlock.enqueue(send_email, 1)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        server.shutdown()
        server.server_close()
    assert {path for path, _, _ in received} == {"/v1/traces"}
    assert {team for _, team, _ in received} == {"shop"}
    body = b"".join(body for _, _, body in received)
    assert b"shop-web" in body
    assert b"send send_email" in body
    assert b"airlock.scope" in body


def test_metrics_without_traces_still_count_per_scope():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.trace import NoOpTracerProvider

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrument(tracer_provider=NoOpTracerProvider(), meter_provider=meter_provider)
    try:
        with airlock.scope():
            airlock.enqueue(send_email, 1)
            airlock.enqueue(send_email, 2)
            assert not trace.get_current_span().get_span_context().is_valid  # no scope span
    finally:
        uninstrument()
        meter_provider.shutdown()
    totals = {
        metric.name: sum(point.value for point in metric.data.data_points)
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name != "airlock.intent.held"
    }
    assert totals == {"airlock.intents.enqueued": 2, "airlock.intents.dispatched": 2}


def test_the_enqueue_time_context_is_the_one_current_at_enqueue(otel):
    with tracer(otel).start_as_current_span("handler"):
        with airlock.scope():
            outer = airlock.enqueue(send_email, 1)
            with tracer(otel).start_as_current_span("inner") as inner:
                nested = airlock.enqueue(send_email, 2)
    assert trace.get_current_span(nested.trace_context) is inner
    assert trace.get_current_span(outer.trace_context).name == SCOPE_SPAN
