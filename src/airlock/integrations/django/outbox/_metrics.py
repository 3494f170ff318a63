"""OpenTelemetry metrics of the outbox: what waits, how old it is, what died, what was published.

Observable gauges read :func:`outbox_stats` when the SDK collects; the relay adds
to the ``airlock.outbox.published`` counter (its rate is the published-per-second).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

try:
    from opentelemetry import metrics
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("airlock's outbox metrics need OpenTelemetry: pip install 'airlock-dispatch[otel]'") from error

from django.db import connections  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox import _background
from airlock.integrations.django.outbox._models import DEAD, HELD, PENDING, READY
from airlock.integrations.django.outbox._relay import outbox_stats

__all__ = ["OutboxMetrics"]

_NAME = "airlock.integrations.django.outbox"


class OutboxMetrics:
    """The outbox's instruments on one meter; give it to a :class:`Relay` as ``metrics=``.

    Args:
        meter_provider: Default: the global one.
        databases: The aliases the gauges report on (an ``airlock.database`` attribute each).

    .. versionadded:: 0.1
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None, databases: Sequence[str] = ()) -> None:
        meter = metrics.get_meter(_NAME, meter_provider=meter_provider)
        self.databases = list(databases or connections.settings)
        self.published = meter.create_counter("airlock.outbox.published", "{message}", "Rows the relay published")
        self.failed = meter.create_counter("airlock.outbox.failed", "{message}", "Failed publish attempts")
        # Attributes airlock.database and airlock.table (airlock_outbox or airlock_processed_intent).
        self.purged = meter.create_counter(
            "airlock.outbox.purged", "{row}", "Sent rows and processed-intent records the relay deleted (RETENTION)"
        )
        # Rows of writer processes that died before their scope decided (state: ready or held).
        self.recovered = meter.create_counter(
            "airlock.outbox.recovered", "{message}", "Rows the relay recovered from writers that died undecided"
        )
        # +1 per task name a relay could not resolve (once per relay): its process's configuration error.
        self.unresolved = meter.create_counter(
            "airlock.outbox.unresolved", "{task}", "Task names in rows that the relay's process cannot resolve"
        )
        meter.create_observable_gauge(
            "airlock.outbox.pending", [self._pending], "{message}", "Rows to deliver (ready, and pending a decision)"
        )
        meter.create_observable_gauge(
            "airlock.outbox.oldest_pending_age", [self._oldest], "s", "Age of the oldest row still to deliver"
        )
        meter.create_observable_gauge("airlock.outbox.dead", [self._dead], "{message}", "Dead-lettered rows")
        meter.create_observable_gauge("airlock.outbox.held", [self._held], "{message}", "Rows held for a person")
        # The background publisher of this process: its hand-off, and how long rows wait in it.
        meter.create_observable_gauge(
            "airlock.outbox.handoff.depth", [self._depth], "{message}", "Rows waiting for the background publisher"
        )
        meter.create_observable_counter(
            "airlock.outbox.handoff.overflowed",
            [self._overflowed],
            "{message}",
            "Rows published inline because the hand-off was full",
        )
        self.commit_to_publish = meter.create_histogram(
            "airlock.outbox.commit_to_publish", "s", "Time from a scope's commit to the publish of its rows"
        )
        _background.latency_observers.append(self.commit_to_publish.record)

    def close(self) -> None:
        """Stop recording the background publisher's latencies into this meter."""
        if self.commit_to_publish.record in _background.latency_observers:
            _background.latency_observers.remove(self.commit_to_publish.record)

    def _depth(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        publisher = _background.background_publisher()
        yield metrics.Observation(0 if publisher is None else publisher.depth)

    def _overflowed(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        publisher = _background.background_publisher()
        yield metrics.Observation(0 if publisher is None else publisher.overflowed)

    def _observe(self, pick: Any) -> Iterable[metrics.Observation]:
        for alias in self.databases:
            try:
                stats = outbox_stats(alias)
            finally:
                connections[alias].close()  # the SDK collects on a thread of its own
            yield metrics.Observation(pick(stats), {"airlock.database": alias})

    def _pending(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._observe(lambda stats: stats[READY] + stats[PENDING])

    def _oldest(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._observe(lambda stats: stats["oldest_pending_age"])

    def _dead(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._observe(lambda stats: stats[DEAD])

    def _held(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._observe(lambda stats: stats[HELD])
