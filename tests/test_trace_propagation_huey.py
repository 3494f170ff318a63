"""Huey: the worker's run joins the request's trace, over real storage and a real consumer.

The trace context travels as a reserved keyword argument of ``airlock_task``
tasks (``_airlock_trace``), which the task-run wrapper takes out again.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huey import RedisHuey, SqliteHuey
from opentelemetry import trace

from airlock.integrations.huey import airlock_task, huey_executor
from tests.conftest import require_service
from tests.otel_support import Telemetry, instrumented, send_through_worker

REDIS_URL = "redis://127.0.0.1:6379/0"
RUN = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

SEEN: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", params=["redis", "sqlite"], ids=["redis", "sqlite"])
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    name = f"airlock-otel-huey-{RUN}"
    if request.param == "redis":
        require_service("redis")
        huey = RedisHuey(name, url=REDIS_URL)
    else:
        huey = SqliteHuey(name, filename=str(Path(tmp_path_factory.mktemp("huey")) / "huey.db"))

    @airlock_task(huey)
    def traced(token: str, **kwargs: Any) -> None:
        SEEN[token] = {"trace_id": trace.get_current_span().get_span_context().trace_id, "kwargs": kwargs}

    consumer = huey.create_consumer(
        workers=1, periodic=False, initial_delay=0.01, max_delay=0.05, check_worker_health=False
    )
    # Consumer.start() installs signal handlers meant for a consumer process; keep pytest's.
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        consumer.start()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    try:
        yield traced
    finally:
        consumer.stop(graceful=True)
        huey.flush()
        huey.storage.close()
        if request.param == "redis":
            huey.storage.pool.disconnect()  # RedisStorage.close() leaves the pool open


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with instrumented() as telemetry:
        yield telemetry


def test_worker_run_joins_the_request_trace(worker: Any, otel: Telemetry) -> None:
    hop = send_through_worker(otel, huey_executor, worker, system="huey")
    token, request, consumer, send = hop.token, hop.request, hop.consumer, hop.send
    assert consumer.name == "process traced"
    assert SEEN[token]["trace_id"] == request.get_span_context().trace_id
    assert SEEN[token]["kwargs"] == {}  # the carrier never reaches the task's own arguments
    assert consumer.parent.span_id == send.context.span_id
    assert send.attributes["messaging.message.id"]  # the Huey task's id
