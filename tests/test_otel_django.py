"""With a DjangoScope, the dispatch span starts when the transaction commits, not at flush."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import transaction

import airlock
from airlock.integrations.django import DjangoScope
from airlock.integrations.opentelemetry._instrumentor import SCOPE_SPAN
from tests.otel_support import Telemetry, instrumented

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with instrumented() as telemetry:
        yield telemetry


def send_email(order_id: int) -> None:
    pass


def test_dispatch_span_starts_at_commit_in_the_request_trace(otel: Telemetry) -> None:
    tracer = otel.tracer_provider.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders") as request:
        with transaction.atomic():
            with airlock.scope(_cls=DjangoScope):
                airlock.enqueue(send_email, 7)
            assert otel.named("send send_email") == [], "held until the commit"
            with tracer.start_as_current_span("UPDATE stock"):
                time.sleep(0.01)
    scope_span = otel.one(SCOPE_SPAN)
    send = otel.one("send send_email")
    assert scope_span.attributes["airlock.scope.outcome"] == "flushed"
    assert send.start_time >= otel.one("UPDATE stock").end_time
    assert send.context.trace_id == request.get_span_context().trace_id
    assert send.parent.span_id == scope_span.context.span_id
    assert send.attributes["airlock.intent.held_ms"] >= 10


def test_rolled_back_transaction_leaves_no_dispatch_span(otel: Telemetry) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        with airlock.scope(_cls=DjangoScope):
            airlock.enqueue(send_email, 7)
        raise RuntimeError("the transaction rolls back after the scope flushed")
    assert otel.one(SCOPE_SPAN).attributes["airlock.scope.outcome"] == "flushed"
    assert otel.named("send send_email") == []
    assert otel.total("airlock.intents.dispatched") == 0
