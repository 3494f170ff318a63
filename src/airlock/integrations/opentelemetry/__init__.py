"""OpenTelemetry for airlock: spans and metrics that show deferred dispatch.

Switch it on once, at start-up, after the SDK is set up::

    from airlock.integrations.opentelemetry import AirlockInstrumentor

    AirlockInstrumentor().instrument()

A span covers each scope, each enqueue is an event on it, and each dispatch gets
its own ``send <task>`` span (kind PRODUCER) when the intent really goes out,
in the trace of the code that enqueued it. The trace context travels in the
queue message, so the worker's ``process <task>`` span (kind CONSUMER) joins
the same trace. ``print_waterfall(spans)`` draws a finished trace in the terminal.
See ``docs/observability.md`` for every span, attribute and metric.

.. versionadded:: 0.1
"""

from __future__ import annotations

try:
    import opentelemetry.sdk.trace  # the waterfall reads SDK spans
    import opentelemetry.trace  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "airlock.integrations.opentelemetry needs OpenTelemetry: pip install 'airlock-dispatch[otel]'"
    ) from error

from airlock.integrations.opentelemetry._instrumentor import AirlockInstrumentor, instrument, uninstrument
from airlock.integrations.opentelemetry._waterfall import format_waterfall, print_waterfall

__all__ = ["AirlockInstrumentor", "format_waterfall", "instrument", "print_waterfall", "uninstrument"]
