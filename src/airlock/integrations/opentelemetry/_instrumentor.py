"""``AirlockInstrumentor``: spans and metrics for scopes, enqueues and dispatches."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from airlock import __version__, _context
from airlock._intent import Intent
from airlock._scope import Scope
from airlock.integrations._observe import (
    Receivers,
    error_text,
    held_ms,
    message_id,
    system_of,
)

__all__ = ["AirlockInstrumentor", "instrument", "uninstrument"]

_NAME = "airlock"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"

# Span names: low cardinality, following "{operation} {destination}" for messaging spans.
SCOPE_SPAN = "airlock.scope"
ENQUEUE_EVENT = "airlock.enqueue"


class _ScopeRecord:
    """A scope's open span, the context token that made it current, and its counts.

    Counts of enqueued and dispatched intents are kept here and added to the
    counters once per task name when the scope ends: one SDK measurement per
    scope instead of one per intent.
    """

    __slots__ = ("dispatched", "dropped", "enqueued", "recording", "span", "token")

    def __init__(self, span: trace.Span, token: object) -> None:
        self.span = span
        self.token = token
        self.recording = span.is_recording()  # fixed at the span's start by the sampler
        self.enqueued: dict[str, int] = {}
        self.dispatched: dict[tuple[str, str], int] = {}
        self.dropped = 0


class _Dispatch:
    """A dispatch span that is open while the executor runs."""

    __slots__ = ("record", "released_ns", "span", "system", "token")

    def __init__(
        self,
        span: trace.Span,
        token: Token[otel_context.Context],
        system: str,
        released_ns: int,
        record: _ScopeRecord | None,
    ) -> None:
        self.span = span
        self.token = token
        self.system = system
        self.released_ns = released_ns
        self.record = record


class _Switch:
    """Whether a provider records anything.

    The API's own providers (the proxy before an SDK is set, and the no-op ones)
    record nothing, so airlock skips building spans and measurements for them.
    An explicit provider is judged once. The global one is looked at again when
    a scope is entered (looking costs environment lookups, too much per intent)
    until an SDK is found; an SDK can be set only once per process, so "on" is final.
    """

    __slots__ = ("get_global", "is_on")

    def __init__(self, explicit: object | None, get_global: Callable[[], object]) -> None:
        self.get_global = None if explicit is not None else get_global
        self.is_on = not _is_api_default(get_global() if explicit is None else explicit)

    def refresh(self) -> bool:
        if not self.is_on and self.get_global is not None:
            self.is_on = not _is_api_default(self.get_global())
        return self.is_on


def _is_api_default(provider: object) -> bool:
    # Every provider the API package defines (proxy, no-op, default) is a no-op;
    # real ones come from an SDK, whatever its name.
    return type(provider).__module__.startswith(("opentelemetry.trace", "opentelemetry.metrics"))


class _Tracing:
    """The receivers and hooks of one ``instrument()`` call, so ``uninstrument()`` undoes exactly them."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
    ) -> None:
        self.tracer = trace.get_tracer(_NAME, __version__, tracer_provider, schema_url=_SCHEMA_URL)
        self.traces_on = _Switch(tracer_provider, trace.get_tracer_provider)
        self.metrics_on = _Switch(meter_provider, metrics.get_meter_provider)
        self.scopes: weakref.WeakKeyDictionary[Scope, _ScopeRecord] = weakref.WeakKeyDictionary()
        self.dispatches: dict[int, _Dispatch] = {}
        self._last: tuple[Scope | None, _ScopeRecord | None] = (None, None)
        self._last_links: tuple[object, list[Link] | None] = (object(), None)
        # (name, system) -> the attributes of its measurements, built once; the SDK only reads them.
        self._held_attributes: dict[tuple[str, str], dict[str, str]] = {}
        meter = metrics.get_meter(_NAME, __version__, meter_provider, schema_url=_SCHEMA_URL)
        unit = "{intent}"
        self.enqueued = meter.create_counter("airlock.intents.enqueued", unit, "Intents accepted into a scope's buffer")
        self.dispatched = meter.create_counter("airlock.intents.dispatched", unit, "Intents an executor accepted")
        self.dropped = meter.create_counter("airlock.intents.dropped", unit, "Intents a policy refused")
        self.discarded = meter.create_counter(
            "airlock.intents.discarded", unit, "Intents dropped with a discarded scope"
        )
        self.failed = meter.create_counter("airlock.intents.failed", unit, "Intents whose executor raised")
        self.held = meter.create_histogram(
            "airlock.intent.held",
            "ms",
            "How long an intent was held between its enqueue and its dispatch",
        )
        self.receivers = Receivers(self)
        self._capture = _context_getter()
        self._previous_hooks: tuple[Any, Any, Any, Any] = (None, None, None, None)

    # -- switching on and off -------------------------------------------------------

    def install(self) -> None:
        hooks = _context.hooks
        self._previous_hooks = (
            hooks.capture_trace_context,
            hooks.inject_trace,
            hooks.continue_trace,
            hooks.send_in_trace,
        )
        hooks.inject_trace = self.inject
        hooks.continue_trace = self.continue_trace
        hooks.send_in_trace = self.send_in_trace
        self.receivers.connect()
        self.wake_if_recording()

    def wake_if_recording(self) -> None:
        """Connect the per-intent receivers (and capture trace context) once an SDK records."""
        if self.traces_on.is_on and self.metrics_on.is_on and self.receivers.is_awake:
            return
        traces_on = self.traces_on.refresh()
        if self.metrics_on.refresh() or traces_on:
            self.receivers.wake()
        hooks = _context.hooks
        if traces_on and hooks.capture_trace_context is self._previous_hooks[0]:
            hooks.capture_trace_context = self._capture

    def remove(self) -> None:
        self.receivers.disconnect()
        hooks = _context.hooks
        capture, inject, continue_, send_in = self._previous_hooks
        # Put back what was there only where the hook is still ours.
        if hooks.capture_trace_context is self._capture:
            hooks.capture_trace_context = capture
        if hooks.inject_trace == self.inject:
            hooks.inject_trace = inject
        if hooks.continue_trace == self.continue_trace:
            hooks.continue_trace = continue_
        if hooks.send_in_trace == self.send_in_trace:
            hooks.send_in_trace = send_in

    # -- scope span ----------------------------------------------------------------

    def scope_entered(self, scope: Scope) -> None:
        self.wake_if_recording()
        if not self.traces_on.is_on:
            if self.metrics_on.is_on:  # a record without a span, for the per-scope counts
                self.scopes[scope] = _ScopeRecord(trace.INVALID_SPAN, None)
            return
        attributes: dict[str, Any] = {
            "airlock.scope.id": scope.id,
            "airlock.scope.class": type(scope).__name__,
        }
        if scope.parent is not None:
            attributes["airlock.scope.parent_id"] = scope.parent.id
        span = self.tracer.start_span(SCOPE_SPAN, kind=SpanKind.INTERNAL, attributes=attributes)
        # Current for the scope's body, so enqueue points (and the dispatch spans that
        # take them as parent) nest under the scope in the trace.
        token = otel_context.attach(trace.set_span_in_context(span))
        self.scopes[scope] = _ScopeRecord(span, token)

    def _record(self, scope: Scope) -> _ScopeRecord | None:
        # Per-intent events come in runs from the same scope: remember the last one
        # (one tuple, read and replaced whole, so threads cannot mix it up).
        last = self._last
        if last[0] is scope:
            return last[1]
        record = self.scopes.get(scope)
        if record is not None:
            self._last = (scope, record)
        return record

    def intent_enqueued(self, scope: Scope, *, intent: Intent) -> None:
        record = self._record(scope)
        if record is None:
            if self.metrics_on.is_on:
                self.enqueued.add(1, {"airlock.intent.name": intent.name})
            return
        name = intent.name
        enqueued = record.enqueued
        enqueued[name] = enqueued.get(name, 0) + 1
        if record.recording:
            attributes = {"airlock.intent.id": intent.id, "airlock.intent.name": name}
            meta = intent._meta
            if meta is not None and meta.origin is not None:
                attributes["airlock.intent.origin"] = str(meta.origin)
            record.span.add_event(ENQUEUE_EVENT, attributes, intent.enqueued_at_ns)

    def intent_captured(self, scope: Scope, *, intent: Intent, child: Scope) -> None:
        record = self.scopes.get(scope)
        if record is not None and record.span.is_recording():
            record.span.add_event(
                "airlock.capture",
                {
                    "airlock.intent.id": intent.id,
                    "airlock.intent.name": intent.name,
                    "airlock.scope.child_id": child.id,
                },
            )

    def intent_dropped(self, scope: Scope, *, intent: Intent, policy: Any) -> None:
        policy_name = type(policy).__name__
        record = self.scopes.get(scope)
        if record is not None:
            record.dropped += 1
            if record.span.is_recording():
                record.span.add_event(
                    "airlock.drop",
                    {
                        "airlock.intent.id": intent.id,
                        "airlock.intent.name": intent.name,
                        "airlock.policy": policy_name,
                    },
                )
        if self.metrics_on.is_on:
            self.dropped.add(1, {"airlock.intent.name": intent.name, "airlock.policy": policy_name})

    def scope_flushed(self, scope: Scope, *, intents: list[Intent]) -> None:
        record = self._forget(scope)
        if record is not None:
            self._end_scope(record, "flushed", len(intents), None)

    def scope_discarded(self, scope: Scope, *, intents: list[Intent], error: BaseException | None) -> None:
        if intents and self.metrics_on.is_on:
            for intent in intents:
                self.discarded.add(1, {"airlock.intent.name": intent.name})
        record = self._forget(scope)
        if record is not None:
            self._end_scope(record, "discarded", len(intents), error)

    def _forget(self, scope: Scope) -> _ScopeRecord | None:
        if self._last[0] is scope:
            self._last = (None, None)
        return self.scopes.pop(scope, None)

    def _end_scope(self, record: _ScopeRecord, outcome: str, count: int, error: BaseException | None) -> None:
        span = record.span
        if span.is_recording():
            span.set_attributes(
                {
                    "airlock.scope.outcome": outcome,
                    "airlock.scope.intents.enqueued": sum(record.enqueued.values()),
                    "airlock.scope.intents.dropped": record.dropped,
                    f"airlock.scope.intents.{outcome}": count,
                }
            )
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, error_text(error)))
        _detach_if_current(span, record.token)
        span.end()
        if self.metrics_on.is_on:
            for name, enqueued in record.enqueued.items():
                self.enqueued.add(enqueued, {"airlock.intent.name": name})
            for (name, system), dispatched in record.dispatched.items():
                self.dispatched.add(dispatched, {"airlock.intent.name": name, "messaging.system": system})

    # -- dispatch span ---------------------------------------------------------------

    def intent_released(self, scope: Scope, *, intent: Intent) -> None:
        if not self.traces_on.is_on:
            return
        now = time_ns()
        system = system_of(scope, intent)
        name = intent.name
        meta = intent._meta  # read once: the properties would each read it again
        if meta is None:
            enqueue_context = destination = None
        else:
            enqueue_context = meta.trace_context
            if not isinstance(enqueue_context, otel_context.Context):
                enqueue_context = None
            options = meta.dispatch_options
            destination = options.get("queue") if options else None
        span = self.tracer.start_span(
            f"send {name}",
            context=enqueue_context,
            kind=SpanKind.PRODUCER,
            attributes=_send_attributes(
                system, name, destination, intent.id, "airlock.intent.held_ms", held_ms(intent, now)
            ),
            links=self._links_to(enqueue_context),
            start_time=now,
        )
        # Current while the executor runs, so its propagate.inject() writes this
        # span's context (and the enqueue-time baggage) into the message.
        token = otel_context.attach(trace.set_span_in_context(span, enqueue_context))
        self.dispatches[id(intent)] = _Dispatch(span, token, system, now, self._record(scope))

    def _links_to(self, enqueue_context: otel_context.Context | None) -> list[Link] | None:
        """The link from a dispatch span to the span current at enqueue.

        The intents of a scope are usually enqueued under the same span, so the
        last answer is kept: spans may share a ``Link``, which the SDK treats as
        immutable.
        """
        last = self._last_links
        if last[0] is enqueue_context:
            return last[1]
        links = None
        if enqueue_context is not None:
            enqueued_in = trace.get_current_span(enqueue_context).get_span_context()
            if enqueued_in.is_valid:
                links = [Link(enqueued_in)]
        self._last_links = (enqueue_context, links)
        return links

    def intent_dispatched(self, scope: Scope, *, intent: Intent, result: Any) -> None:
        dispatch = self.dispatches.pop(id(intent), None)
        if dispatch is None:
            system = system_of(scope, intent)
            released = time_ns()
            record = self._record(scope)
        else:
            system = dispatch.system
            released = dispatch.released_ns
            record = dispatch.record
        if self.metrics_on.is_on:
            # Before the dispatch span ends: an exemplar of the held time points at it.
            name = intent.name
            key = (name, system)
            attributes = self._held_attributes.get(key)
            if attributes is None:
                attributes = self._held_attributes[key] = {"airlock.intent.name": name, "messaging.system": system}
            self.held.record(held_ms(intent, released), attributes)
            if record is None:
                self.dispatched.add(1, attributes)
            else:
                dispatched = record.dispatched
                dispatched[key] = dispatched.get(key, 0) + 1
        if dispatch is not None:
            span = dispatch.span
            if system != "sync" and span.is_recording():
                sent_id = message_id(system, result)
                if sent_id is not None:
                    span.set_attribute("messaging.message.id", sent_id)
            # Released and dispatched in one synchronous call (the executor's), so the
            # context attached at release is still the current one.
            otel_context.detach(dispatch.token)
            span.end()

    def dispatch_failed(self, scope: Scope, *, intent: Intent, error: BaseException) -> None:
        dispatch = self.dispatches.pop(id(intent), None)
        system = system_of(scope, intent) if dispatch is None else dispatch.system
        if dispatch is not None:
            span = dispatch.span
            _mark_failed(span, error)
            otel_context.detach(dispatch.token)
            span.end()
        if self.metrics_on.is_on:
            self.failed.add(1, {"airlock.intent.name": intent.name, "messaging.system": system})

    # -- propagation hooks -------------------------------------------------------------

    def inject(self, carrier: MutableMapping[str, Any]) -> None:
        propagate.inject(carrier)

    @contextmanager
    def send_in_trace(self, carrier: Mapping[str, Any], *, name: str, system: str, intent_id: str) -> Iterator[None]:
        """A publish with no intent behind it (the outbox relay's), in the trace recorded at enqueue.

        The send span is a child of the span that was current at enqueue, as a
        fast-path dispatch span is, and current around the publish, so the message
        carries it and the worker's span joins the same trace. A relay process may
        never enter a scope, so an SDK set up after instrumenting is looked for here.
        """
        if not self.traces_on.refresh():
            yield
            return
        enqueued = propagate.extract(carrier)
        enqueued_in = trace.get_current_span(enqueued).get_span_context()
        span = self.tracer.start_span(
            f"send {name}",
            context=enqueued,
            kind=SpanKind.PRODUCER,
            attributes=_send_attributes(system, name, None, intent_id, "airlock.outbox.relayed", True),
            links=[Link(enqueued_in)] if enqueued_in.is_valid else None,
        )
        token = otel_context.attach(trace.set_span_in_context(span, enqueued))
        try:
            yield
        except BaseException as error:
            _mark_failed(span, error)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    @contextmanager
    def continue_trace(self, carrier: Mapping[str, Any], *, name: str, system: str) -> Iterator[None]:
        """Run a worker-side task in the trace its message carries, under a CONSUMER span."""
        extracted = propagate.extract(carrier)
        remote = trace.get_current_span(extracted).get_span_context()
        running = trace.get_current_span().get_span_context()
        if remote.is_valid and running.is_valid and running.trace_id == remote.trace_id:
            # Another instrumentation (opentelemetry-instrumentation-celery) already
            # opened the consumer span from the same message: one is enough.
            yield
            return
        attributes = {
            "messaging.system": system,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": name,
        }
        links = [Link(remote, {"airlock.link": "sent_by"})] if remote.is_valid else None
        token = otel_context.attach(extracted)
        try:
            with self.tracer.start_as_current_span(
                f"process {name}", kind=SpanKind.CONSUMER, attributes=attributes, links=links
            ):
                yield
        finally:
            otel_context.detach(token)


def _send_attributes(
    system: str, name: str, destination: object, intent_id: str, extra: str, value: Any
) -> dict[str, Any]:
    """A send span's attributes: the messaging conventions, the intent's own, and one of the caller's."""
    return {
        "messaging.system": system,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": str(destination or name),
        "airlock.intent.id": intent_id,
        "airlock.intent.name": name,
        extra: value,
    }


def _mark_failed(span: trace.Span, error: BaseException) -> None:
    if span.is_recording():
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, error_text(error)))


def _context_getter() -> Callable[[], otel_context.Context]:
    """``opentelemetry.context.get_current``, or, when OpenTelemetry keeps the context
    in a ``ContextVar`` (its default runtime), that variable's own ``get``: it runs at
    every enqueue, and the public function adds two Python calls to that one."""
    variable = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    if isinstance(variable, ContextVar):
        getter: Callable[[], otel_context.Context] = variable.get
        return getter
    return otel_context.get_current


def _detach_if_current(span: trace.Span, token: Any) -> None:
    """Detach ``token`` only while ``span`` is still the current span.

    A scope flushed long after its block ended (imperative use), or from another
    ``contextvars`` context, would otherwise reset context the application attached
    since; leaving it alone is the lesser harm.
    """
    if token is not None and trace.get_current_span() is span:
        otel_context.detach(token)


class AirlockInstrumentor:
    """Trace and measure airlock, in the style of the OpenTelemetry instrumentors.

    ``AirlockInstrumentor().instrument()`` connects one subscriber to every airlock
    signal and switches on trace propagation into queue messages;
    ``uninstrument()`` undoes exactly that. There is one instance per process,
    as with the contrib instrumentors, so both calls can come from anywhere.

    .. versionadded:: 0.1
    """

    _instance: AirlockInstrumentor | None = None
    _tracing: _Tracing | None

    def __new__(cls) -> AirlockInstrumentor:
        if cls._instance is None:
            instance = super().__new__(cls)
            instance._tracing = None
            cls._instance = instance
        return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        """Whether :meth:`instrument` is in effect (the contrib instrumentors' name for it)."""
        return self._tracing is not None

    def instrument(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """Start tracing scopes, enqueues and dispatches, and counting intents.

        Calling it while already instrumented does nothing (as with the contrib
        instrumentors): call :meth:`uninstrument` first to change providers.

        Args:
            tracer_provider: Where spans go. Default: the global provider, which the
                SDK sets from the ``OTEL_*`` environment variables (see the docs).
            meter_provider: Where metrics go. Default: the global provider.
        """
        if self._tracing is not None:
            return
        tracing = _Tracing(tracer_provider, meter_provider)
        tracing.install()
        self._tracing = tracing

    def uninstrument(self) -> None:
        """Disconnect the subscriber and restore the propagation hooks (no-op when off)."""
        tracing, self._tracing = self._tracing, None
        if tracing is None:
            return
        tracing.remove()


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """``AirlockInstrumentor().instrument(...)``, for symmetry with the structlog bridge.

    .. versionadded:: 0.1
    """
    AirlockInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


def uninstrument() -> None:
    """``AirlockInstrumentor().uninstrument()``.

    .. versionadded:: 0.1
    """
    AirlockInstrumentor().uninstrument()
