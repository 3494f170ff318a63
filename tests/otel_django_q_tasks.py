"""A django-q2 task for the trace propagation test, and the worker's OpenTelemetry set-up.

The ``qcluster`` subprocess imports this module to run :func:`traced` (and the
Django Tasks ``db_worker`` to run its own ``traced``). There (and only there:
``AIRLOCK_OTEL_WORKER`` is set for those subprocesses alone) it sets up
the SDK and airlock's instrumentor, as a project would in its worker; the task
reports the spans started in its process so the test can check their parentage.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider

from airlock.integrations.django_q import airlock_task

_started: list[Span] = []


class _Recorder(SpanProcessor):
    def on_start(self, span: Span, parent_context: Any = None) -> None:
        _started.append(span)


if os.environ.get("AIRLOCK_OTEL_WORKER") == "1":
    from airlock.integrations.opentelemetry import AirlockInstrumentor

    _provider = TracerProvider()
    _provider.add_span_processor(_Recorder())
    AirlockInstrumentor().instrument(tracer_provider=_provider)


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else format(value, f"0{width}x")


@airlock_task
def traced(token: str) -> dict[str, Any]:
    """Report the current trace and every span this worker process started so far."""
    return spans_report(token)


def spans_report(token: str) -> dict[str, Any]:
    """The current trace and every span this process started so far (a JSON-able dict).

    The Django Tasks worker's ``traced`` task reports with it too.
    """
    return {
        "token": token,
        "trace_id": _hex(trace.get_current_span().get_span_context().trace_id, 32),
        "spans": [
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": _hex(span.context.trace_id, 32),
                "span_id": _hex(span.context.span_id, 16),
                "parent_id": _hex(span.parent.span_id if span.parent else None, 16),
            }
            for span in _started
        ],
    }


def assert_report_continued(report: dict[str, Any], token: str, send: Any) -> None:
    """A worker's :func:`spans_report` shows its run inside the trace of ``send`` (the
    dispatch span): one consumer span under it, and the run's scope under that."""
    trace_id = _hex(send.context.trace_id, 32)
    assert report["token"] == token
    assert report["trace_id"] == trace_id  # the task body ran inside the request's trace
    in_trace = [span for span in report["spans"] if span["trace_id"] == trace_id]
    consumers = [span for span in in_trace if span["kind"] == "CONSUMER"]
    assert [span["name"] for span in consumers] == ["process traced"]
    assert consumers[0]["parent_id"] == _hex(send.context.span_id, 16)
    scopes = [span for span in in_trace if span["name"] == "airlock.scope"]
    assert [span["parent_id"] for span in scopes] == [consumers[0]["span_id"]]
