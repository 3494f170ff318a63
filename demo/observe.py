"""What the demo shows of each scene: airlock's structlog events and the trace waterfall.

Both are airlock's own integrations, switched on as an application would:
``airlock.integrations.structlog.instrument()`` with structlog configured to
render ``key=value`` lines, and ``AirlockInstrumentor`` on an OpenTelemetry SDK
tracer provider whose spans are kept in memory and drawn by ``print_waterfall``.
The outbox's fast path and relay log on the stdlib logger
``airlock.integrations.django.outbox``; a handler turns those records into
structlog lines too, so they show among the others (and not on stderr).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO, cast

import structlog
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import airlock.integrations.structlog
from airlock.integrations.opentelemetry import AirlockInstrumentor

__all__ = ["Observer", "place"]


class _Lines:
    """A file for structlog's PrintLogger that keeps the lines, from any thread, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def write(self, text: str) -> None:
        with self._lock:
            self._lines.extend(line for line in text.splitlines() if line)

    def flush(self) -> None:
        pass

    def take(self) -> list[str]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines


# Where a line is written, when it is neither a request ("web") nor a task run ("consumer").
place: ContextVar[str | None] = ContextVar("demo.observe.place", default=None)


def _place_of(thread: threading.Thread) -> str:
    if thread is threading.main_thread():
        return "web"
    if thread.name == "airlock-outbox-publisher":  # the outbox's background publisher, in the web process
        return "publisher"
    return "consumer"


# Left out of the lines shown, to keep them short: the scope's start (debug) and unique ids.
_HIDDEN_EVENTS = {"airlock.scope.entered"}
_HIDDEN_KEYS = ("intent_id", "message_id")


def _add_context(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Where the line was written (the web thread or the consumer), and the trace it belongs to."""
    if event["event"] in _HIDDEN_EVENTS:
        raise structlog.DropEvent
    for key in _HIDDEN_KEYS:
        event.pop(key, None)
    for key in [key for key, value in event.items() if value is None]:
        del event[key]
    event["in"] = place.get() or _place_of(threading.current_thread())
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace"] = format(context.trace_id, "032x")[:8]
    return event


class _ToStructlog(logging.Handler):
    """The outbox's own log records (the fast path, the relay) as structlog lines among the others."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.log = structlog.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        self.log.log(record.levelno, record.getMessage(), logger=record.name)


# The stdlib loggers whose records the demo shows: the outbox logs its fast path and relay there.
_STDLIB_LOGGERS = ("airlock.integrations.django.outbox",)


class Observer:
    """Switches airlock's structlog and OpenTelemetry integrations on, and hands out what they saw."""

    def __init__(self) -> None:
        self.lines = _Lines()
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                _add_context,
                structlog.processors.LogfmtRenderer(key_order=["trace", "in", "level", "event"], drop_missing=True),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, self.lines)),
            cache_logger_on_first_use=True,
        )
        airlock.integrations.structlog.instrument()
        self.bridge = _ToStructlog()
        for name in _STDLIB_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self.bridge)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        trace.set_tracer_provider(provider)
        AirlockInstrumentor().instrument(tracer_provider=provider, meter_provider=NoOpMeterProvider())

    def take(self) -> tuple[list[str], list[ReadableSpan]]:
        """The log lines and the finished spans since the last call."""
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return self.lines.take(), spans

    def close(self) -> None:
        for name in _STDLIB_LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self.bridge)
            logger.propagate = True
        AirlockInstrumentor().uninstrument()
        airlock.integrations.structlog.uninstrument()
