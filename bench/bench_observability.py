"""What observing airlock costs per intent.

Figures (issue 5's goals):
- both subscribers on (structlog to a null logger, the OTel SDK with an in-memory span
  exporter and an in-memory metric reader), per intent, vs one bare SDK span   <= 2x
- both instrumented but nothing configured (the no-op OTel API, structlog not configured,
  so events go to a stdlib ``airlock`` logger that is not enabled), per intent, vs the
  same intents uninstrumented                                                   <= 1.5x

An intent here is a full life: enqueue, flush, dispatch through the sync executor to a
task that does nothing, inside a scope of 100 intents (the scope's own span and events
are shared out over its intents).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

import airlock
from airlock.integrations import structlog as airlock_structlog
from airlock.integrations.opentelemetry import AirlockInstrumentor
from bench._harness import Figure, best_of

PER_SCOPE = 100


def task(i: int, key: str = "") -> None:
    pass


def intents(n: int) -> None:
    enqueue = airlock.enqueue
    with airlock.scope():
        for i in range(n):
            enqueue(task, i, key="v")


@contextmanager
def sdk(*, traces: bool = True, metrics: bool = True, logs: bool = True) -> Iterator[TracerProvider]:
    """airlock observed by the SDK (and/or structlog to a null logger), undone after."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider: MeterProvider | NoOpMeterProvider = (
        MeterProvider(metric_readers=[InMemoryMetricReader()]) if metrics else NoOpMeterProvider()
    )
    if logs:
        structlog.configure(
            processors=[structlog.processors.add_log_level],
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
        yield tracer_provider
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


def bare_span(provider: TracerProvider, n: int, repeat: int) -> float:
    """Seconds to create and end one span, nothing else, on ``provider``."""
    tracer = provider.get_tracer("bench")

    def spans() -> None:
        for _ in range(n):
            tracer.start_span("bare").end()

    return best_of(spans, repeat=repeat) / n


def per_intent(n: int, repeat: int) -> float:
    return best_of(lambda: intents(n), repeat=repeat) / n


def run(quick: bool) -> list[Figure]:
    repeat = 5 if quick else 25
    n = PER_SCOPE
    figures = []

    with sdk() as provider:
        bare = bare_span(provider, n, repeat)
        observed = per_intent(n, repeat)
    figures.append(
        Figure(
            "per intent, structlog + OTel SDK on, vs one bare SDK span",
            observed / bare,
            "<= 2x",
            observed / bare <= 2,
            f"{observed * 1e6:.1f} us vs {bare * 1e6:.1f} us",
        )
    )
    # Where the time goes, against the same bare span (no goal: for reading the one above).
    for label, parts in (
        ("  of which: OTel traces alone", {"metrics": False, "logs": False}),
        ("  of which: OTel metrics alone", {"traces": False, "logs": False}),
        ("  of which: structlog alone", {"traces": False, "metrics": False}),
    ):
        with sdk(**parts):
            alone = per_intent(n, repeat)
        figures.append(Figure(label, alone / bare, "-", None, f"{alone * 1e6:.1f} us"))

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
