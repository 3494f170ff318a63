"""What observing airlock costs per intent.

Figures (issue 5's goals):
- both subscribers on (structlog to a null logger, the OTel SDK with an in-memory span
  exporter and an in-memory metric reader), per intent, vs one bare SDK span   <= 2x
  (for reading it, no goal: the same telemetry written by hand without airlock, which
  is the floor for the goal, then airlock against that, and each bridge alone)
- both instrumented but nothing configured (the no-op OTel API, structlog not configured,
  so events go to a stdlib ``airlock`` logger that is not enabled), per intent, vs the
  same intents uninstrumented                                                   <= 1.5x

An intent here is a full life: enqueue, flush, dispatch through the sync executor to a
task that does nothing, inside a scope of 100 intents (the scope's own span and events
are shared out over its intents).

The in-memory exporter keeps every span it is given. It is emptied before each timing,
untimed, on both sides of a ratio: otherwise each timing would also pay for fresh memory
to hold the spans of the timings before it, which no real exporter does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider

import airlock
from airlock.integrations import structlog as airlock_structlog
from airlock.integrations.opentelemetry import AirlockInstrumentor
from bench._harness import Figure, best_of, best_of_each

PER_SCOPE = 100


def task(i: int, key: str = "") -> None:
    pass


def intents(n: int) -> None:
    enqueue = airlock.enqueue
    with airlock.scope():
        for i in range(n):
            enqueue(task, i, key="v")


@dataclass
class SDK:
    provider: TracerProvider
    exporter: InMemorySpanExporter


@contextmanager
def sdk(*, traces: bool = True, metrics: bool = True, logs: bool = True, production: bool = False) -> Iterator[SDK]:
    """airlock observed by the SDK (and/or structlog to a null logger), undone after.

    ``production``: as commonly run in production, 10% of traces sampled, structlog
    filtering at INFO, and the held-time histogram dropped by a view.
    """
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.1)) if production else None)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    views = [View(instrument_name="airlock.intent.held", aggregation=DropAggregation())] if production else []
    meter_provider: MeterProvider | NoOpMeterProvider = (
        MeterProvider(metric_readers=[InMemoryMetricReader()], views=views) if metrics else NoOpMeterProvider()
    )
    if logs:
        structlog.configure(
            processors=[structlog.processors.add_log_level],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO if production else logging.NOTSET),
            logger_factory=structlog.ReturnLoggerFactory(),
            cache_logger_on_first_use=True,
        )
        airlock_structlog.instrument()
    if traces or metrics:
        AirlockInstrumentor().instrument(
            tracer_provider=tracer_provider if traces else NoOpTracerProvider(),
            meter_provider=meter_provider,
        )
    try:
        yield SDK(tracer_provider, exporter)
    finally:
        AirlockInstrumentor().uninstrument()
        airlock_structlog.uninstrument()
        structlog.reset_defaults()
        if isinstance(meter_provider, MeterProvider):
            meter_provider.shutdown()
        tracer_provider.shutdown()
        exporter.clear()


@contextmanager
def nothing_configured() -> Iterator[None]:
    structlog.reset_defaults()
    logger = logging.getLogger("airlock")
    level = logger.level
    logger.setLevel(logging.WARNING)  # what an application that never set it up gets
    airlock_structlog.instrument()
    AirlockInstrumentor().instrument()  # no SDK: the global providers are the no-op API
    try:
        yield
    finally:
        AirlockInstrumentor().uninstrument()
        airlock_structlog.uninstrument()
        logger.setLevel(level)


def bare_spans(telemetry: SDK, n: int) -> Callable[[], None]:
    """Create and end ``n`` spans, nothing else, on the SDK's provider."""
    tracer = telemetry.provider.get_tracer("bench")

    def spans() -> None:
        for _ in range(n):
            tracer.start_span("bare").end()

    return spans


def by_hand(telemetry: SDK, meter_provider: MeterProvider, n: int) -> Callable[[], None]:
    """``n`` intents' worth of the same telemetry written by hand around a plain list.

    What an application would write itself: an event and a debug log at enqueue;
    at dispatch a PRODUCER span with the same attributes and link, made current,
    then a histogram measurement and an info log. No airlock at all.
    """
    tracer = telemetry.provider.get_tracer("bench")
    held = meter_provider.get_meter("bench").create_histogram("held", "ms")
    log = structlog.get_logger("bench")

    def unit_of_work() -> None:
        with tracer.start_as_current_span("scope") as scope_span:
            buffer = []
            for i in range(n):
                buffer.append((task, (i,), {"key": "v"}, time.time_ns()))
                scope_span.add_event("enqueue", {"id": f"{i:016x}", "name": "task"})
                log.debug("enqueued", id=i, name="task", origin=None, scope="s")
            enqueued_in = trace.set_span_in_context(scope_span)
            link = [trace.Link(scope_span.get_span_context())]
            for fn, args, kwargs, stamp in buffer:
                now = time.time_ns()
                attributes = {
                    "messaging.system": "sync",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "send",
                    "messaging.destination.name": "task",
                    "airlock.intent.id": f"{stamp:016x}",
                    "airlock.intent.name": "task",
                    "airlock.intent.held_ms": (now - stamp) / 1e6,
                }
                span = tracer.start_span("send task", enqueued_in, trace.SpanKind.PRODUCER, attributes, link, now)
                token = otel_context.attach(trace.set_span_in_context(span, enqueued_in))
                fn(*args, **kwargs)
                otel_context.detach(token)
                span.end()
                held.record((now - stamp) / 1e6, {"name": "task", "system": "sync"})
                log.info("dispatched", id=stamp, name="task", origin=None, scope="s", deferral_ms=0.0)

    return unit_of_work


def per_intent(n: int, repeat: int, telemetry: SDK | None = None) -> float:
    setup = None if telemetry is None else telemetry.exporter.clear
    return best_of(lambda: intents(n), repeat=repeat, setup=setup) / n


def run(quick: bool) -> list[Figure]:
    repeat = 5 if quick else 25
    n = PER_SCOPE
    figures = []

    with sdk() as telemetry:
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        seconds = best_of_each(
            {
                "bare": bare_spans(telemetry, n),
                "observed": lambda: intents(n),
                "by hand": by_hand(telemetry, meter_provider, n),
            },
            repeat=repeat,
            setup=telemetry.exporter.clear,
        )
        meter_provider.shutdown()
    bare, observed, hand_written = (seconds[name] / n for name in ("bare", "observed", "by hand"))
    figures.append(
        Figure(
            "per intent, structlog + OTel SDK on, vs one bare SDK span",
            observed / bare,
            "<= 2x",
            observed / bare <= 2,
            f"{observed * 1e6:.1f} us vs {bare * 1e6:.1f} us",
        )
    )
    figures.append(
        Figure(
            "  floor: that telemetry written by hand, no airlock, vs the bare span",
            hand_written / bare,
            "-",
            None,
            f"{hand_written * 1e6:.1f} us",
        )
    )
    figures.append(
        Figure(
            "per intent, the same, vs the same telemetry written by hand",
            observed / hand_written,
            "-",
            None,
            f"{observed * 1e6:.1f} us vs {hand_written * 1e6:.1f} us",
        )
    )
    # Where the time goes, against the same bare span (no goal: for reading the one above).
    for label, parts in (
        ("  of which: OTel traces alone", {"metrics": False, "logs": False}),
        ("  of which: OTel metrics alone", {"traces": False, "logs": False}),
        ("  of which: structlog alone", {"traces": False, "metrics": False}),
    ):
        with sdk(**parts) as telemetry:
            alone = per_intent(n, repeat, telemetry)
        figures.append(Figure(label, alone / bare, "-", None, f"{alone * 1e6:.1f} us"))
    with sdk(production=True) as telemetry:
        sampled = per_intent(n, repeat, telemetry)
    figures.append(
        Figure(
            "  with 10% of traces sampled, structlog at INFO, histogram dropped",
            sampled / bare,
            "-",
            None,
            f"{sampled * 1e6:.1f} us",
        )
    )

    plain = per_intent(n, repeat)
    with nothing_configured():
        noop = per_intent(n, repeat)
    figures.append(
        Figure(
            "per intent, both instrumented with nothing configured, vs off",
            noop / plain,
            "<= 1.5x",
            noop / plain <= 1.5,
            f"{noop * 1e6:.2f} us vs {plain * 1e6:.2f} us",
        )
    )
    return figures
