"""Dramatiq: the worker's run joins the request's trace, over a real broker and a real worker.

The trace context travels in the message's options (``airlock_trace``); the
worker's ``AirlockMiddleware`` continues it around the actor's run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace

from airlock.integrations.dramatiq import TRACE_OPTION, AirlockMiddleware, dramatiq_executor
from tests.conftest import require_service
from tests.otel_support import Telemetry, instrumented, send_through_worker

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RUN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
QUEUE = f"airlock-otel-dramatiq-{RUN}"
NAMESPACE = f"airlock-otel-dramatiq-{RUN}"

SEEN: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", params=["redis", "rabbitmq"], ids=["redis", "rabbitmq"])
def worker(request: pytest.FixtureRequest) -> Iterator[Any]:
    require_service(request.param)
    if request.param == "redis":
        broker: dramatiq.Broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
    else:
        broker = RabbitmqBroker(url=RABBITMQ_URL, confirm_delivery=True)
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(AirlockMiddleware())

    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
    def traced(token: str) -> None:
        SEEN[token] = {
            "trace_id": trace.get_current_span().get_span_context().trace_id,
            "options": dict(CurrentMessage.get_current_message().options),
        }

    running = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100, queues={QUEUE})
    running.start()
    try:
        yield traced
    finally:
        running.stop()
        broker.flush_all()
        if request.param == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{NAMESPACE}:*"))
            if keys:
                client.delete(*keys)
            client.close()
            broker.client.connection_pool.disconnect()  # RedisBroker.close() leaves it open
        else:
            for suffix in ("", ".DQ", ".XQ"):
                broker.channel.queue_delete(QUEUE + suffix)
        broker.close()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with instrumented() as telemetry:
        yield telemetry


def test_worker_run_joins_the_request_trace(worker: Any, otel: Telemetry) -> None:
    hop = send_through_worker(otel, dramatiq_executor, worker, system="dramatiq")
    token, request, consumer, send = hop.token, hop.request, hop.consumer, hop.send
    assert consumer.name == "process traced"
    assert consumer.attributes["messaging.system"] == "dramatiq"
    assert SEEN[token]["trace_id"] == request.get_span_context().trace_id
    assert "traceparent" in SEEN[token]["options"][TRACE_OPTION]
    assert consumer.parent.span_id == send.context.span_id
    assert send.attributes["messaging.message.id"]  # the Dramatiq message's id
