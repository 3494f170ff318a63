"""django-q2: the worker's run joins the request's trace, across processes.

A real ``qcluster`` subprocess on the ORM broker (PostgreSQL) runs the task with
its own OpenTelemetry SDK (see ``tests/otel_django_q_tasks.py``); the trace
context travels in a field of the queued task. The worker reports the spans it
started, and their trace and parents are checked against the request's spans.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django_q.conf import Conf
from django_q.models import Task

from airlock.integrations.executors.django_q import django_q_executor
from tests.conftest import require_service
from tests.django_q_support import Worker, wait_for
from tests.otel_django_q_tasks import assert_report_continued, traced
from tests.otel_support import Telemetry, instrumented, request_enqueuing

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

QUEUE = f"airlock-otel-djq-{os.getpid()}"


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    if os.environ.get("AIRLOCK_TEST_DB", "postgres") != "postgres":
        pytest.skip("the qcluster subprocess needs a shared database; SQLite tests run in memory")
    require_service("postgres")
    request.getfixturevalue("django_db_setup")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Conf, "CLUSTER_NAME", QUEUE)
        patch.setenv("AIRLOCK_OTEL_WORKER", "1")  # inherited by the subprocess only
        with open(tmp_path_factory.mktemp("qcluster") / "qcluster.log", "w+b") as log:
            running = Worker(connection.settings_dict["NAME"], QUEUE, log)
            patch.delenv("AIRLOCK_OTEL_WORKER")
            try:
                yield running
            finally:
                running.stop()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with instrumented() as telemetry:
        yield telemetry


def test_worker_run_joins_the_request_trace(worker: Worker, otel: Telemetry) -> None:
    token = os.urandom(8).hex()
    request = request_enqueuing(otel, django_q_executor, traced, token)
    (send,) = [span for span in otel.spans if span.name == "send traced"]
    assert send.attributes["messaging.system"] == "django_q"
    assert send.context.trace_id == request.get_span_context().trace_id

    def finished() -> Any:
        # The message id on the dispatch span is django-q2's task id.
        return Task.objects.filter(id=send.attributes["messaging.message.id"]).first()

    task = wait_for(finished, what="the traced task to finish", worker=worker)
    assert task.success, task.result
    assert_report_continued(task.result, token, send)
