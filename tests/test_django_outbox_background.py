"""The background publisher: the fast path off the request's path, bounded, fork-safe, drained at exit.

Runs on PostgreSQL, and with AIRLOCK_TEST_DB=sqlite or =mariadb on those. In-process
tests use Celery's in-memory transport (real kombu code); the exit tests run a child
process against a Redis of their own (never the shared one).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

import airlock
from airlock.integrations.django.outbox import (
    READY,
    SENT,
    Carrier,
    OutboxScope,
    Relay,
    background_publisher,
    configure_outbox,
    handoff_full,
    outbox_options,
    register_carrier,
)
from airlock.integrations.django.outbox._markline import APPLICATION_NAME, confirm_lines, line_for
from airlock.integrations.django.outbox._writers import APPLICATION_NAME as WRITER_LOCK
from airlock.integrations.executors.celery import celery_executor
from tests.djangoproject.checks import require_database
from tests.outbox_process import environment
from tests.outbox_support import drain_relay, make_app, memory_messages, memory_record, rows, settle, states
from tests.own_redis import OwnRedis, own_redis

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "airlock-outbox-background"


@pytest.fixture(autouse=True)
def outbox() -> Iterator[None]:
    configure_outbox({})  # the default: background
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    memory_messages()
    yield
    memory_messages()  # what a test published and did not read is not the next module's
    configure_outbox(None)


class Gate(Carrier):
    """A carrier whose sends wait until the test opens the gate; it notes what it sent, and in which thread."""

    key = "gate"

    def __init__(self) -> None:
        self.open = threading.Event()
        self.sent: list[tuple[Any, str]] = []
        self.depths: list[int] = []  # the publisher's depth at each send
        self.entered = threading.Event()  # a send is waiting at the gate

    def name_of(self, task: Any) -> str:
        return f"gate.{task.__name__}"

    def resolve(self, name: str) -> Any:
        return job

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        self.entered.set()
        assert self.open.wait(10), "the test never opened the gate"
        self.sent.append((args[0], threading.current_thread().name))
        publisher = background_publisher()
        self.depths.append(-1 if publisher is None else publisher.depth)
        return intent_id


def job(value: Any) -> Any:
    return value


def gate_executor(intent: Any) -> Any:
    raise AssertionError("the outbox publishes through the carrier")


@pytest.fixture
def gate() -> Iterator[Gate]:
    carrier = Gate()
    register_carrier(gate_executor, carrier)
    yield carrier
    carrier.open.set()
    settle()


def test_the_scope_returns_before_the_publish_and_the_publisher_thread_sends_in_order(gate):
    with airlock.scope(executor=gate_executor), transaction.atomic():
        for number in range(5):
            airlock.enqueue(job, number)
    # The scope has ended, and nothing is published yet: the publisher waits at the gate.
    publisher = background_publisher()
    assert publisher is not None and publisher.depth == 5
    assert gate.sent == []
    confirm_lines()  # the ready mark's answer (on PostgreSQL the scope did not wait for it)
    assert [state for _, _, state in _raw_rows()] == [READY] * 5
    gate.open.set()
    settle()
    assert gate.sent == [(number, "airlock-outbox-publisher") for number in range(5)]
    assert states() == [SENT] * 5
    assert publisher.depth == 0


def test_many_scopes_from_many_threads_each_keep_their_order():
    def request(worker: int) -> None:
        try:
            for round_ in range(5):
                with airlock.scope(), transaction.atomic():
                    for number in range(4):
                        airlock.enqueue(memory_record, worker, round_, number)
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=request, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = memory_messages()
    assert len(messages) == 80
    assert len({task_id for task_id, _, _ in messages}) == 80
    seen: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for _, (worker, round_, number), _ in messages:
        seen[(worker, round_)].append(number)
    assert all(numbers == [0, 1, 2, 3] for numbers in seen.values())  # one scope's rows in enqueue order
    assert states() == [SENT] * 80


def test_a_run_takes_whole_scopes_up_to_batch_size_rows(gate):
    configure_outbox({"BATCH_SIZE": 2})
    for number in range(4):  # the first is taken at once and waits at the gate; the others queue
        with airlock.scope(executor=gate_executor), transaction.atomic():
            airlock.enqueue(job, number)
        assert gate.entered.wait(10)
    gate.open.set()
    settle()
    assert [value for value, _ in gate.sent] == [0, 1, 2, 3]
    # Runs: [0], then [1, 2] (two rows, while 3 waits: depth 3), then [3].
    assert gate.depths == [4, 3, 3, 1]


def test_a_run_of_several_scopes_marks_them_sent_in_one_statement(gate, monkeypatch):
    from airlock.integrations.django.outbox import _background

    marks: list[int] = []
    real = _background.set_state

    def recording(connection, intent_ids, state, **extra):
        marks.append(len(intent_ids))
        return real(connection, intent_ids, state, **extra)

    monkeypatch.setattr(_background, "set_state", recording)
    for number in range(3):  # the first waits at the gate; the next two are one run
        with airlock.scope(executor=gate_executor), transaction.atomic():
            airlock.enqueue(job, number)
            airlock.enqueue(job, number)
        assert gate.entered.wait(10)
    gate.open.set()
    settle()
    assert marks == [2, 4]  # the first run's scope, then the two scopes of the second run together
    assert states() == [SENT] * 6


def _request_through_the_middleware(view: Any) -> Any:
    from django.test import RequestFactory

    from airlock.integrations.django import AirlockMiddleware

    return AirlockMiddleware(view)(RequestFactory().get("/order/"))


def _order_view(request: Any) -> Any:
    from django.http import HttpResponse

    with transaction.atomic():
        for number in range(3):
            airlock.enqueue(memory_record, number)
    return HttpResponse("ok")


def test_in_a_request_the_rows_are_handed_over_once_the_response_is_closed():
    response = _request_through_the_middleware(_order_view)
    # The scope flushed (the rows are ready) but the publisher was not handed them yet.
    confirm_lines()
    assert states() == [READY] * 3
    publisher = background_publisher()
    assert publisher is None or publisher.depth == 0
    time.sleep(0.05)
    assert states() == [READY] * 3
    response.close()  # what the WSGI server does once it has sent the body
    assert [args for _, args, _ in memory_messages()] == [[0], [1], [2]]
    assert states() == [SENT] * 3


def test_a_streaming_response_hands_its_rows_over_at_once():
    from django.http import StreamingHttpResponse

    def view(request: Any) -> Any:
        _order_view(request)
        return StreamingHttpResponse(iter([b"a", b"b"]))

    response = _request_through_the_middleware(view)
    assert [args for _, args, _ in memory_messages()] == [[0], [1], [2]]  # before the body was sent
    response.close()


def test_a_response_that_is_never_closed_hands_its_rows_over_when_collected():
    import gc

    response = _request_through_the_middleware(_order_view)
    confirm_lines()
    assert states() == [READY] * 3
    del response
    gc.collect()
    assert [args for _, args, _ in memory_messages()] == [[0], [1], [2]]


def test_what_a_request_that_raises_held_back_runs_at_once():
    from airlock.integrations.django._after_response import after_response

    class Boom(Exception):
        pass

    ran: list[str] = []

    def view(request: Any) -> Any:
        assert after_response(lambda: ran.append("held"))
        assert ran == []
        raise Boom

    with pytest.raises(Boom):
        _request_through_the_middleware(view)
    assert ran == ["held"]  # no response will be closed


def test_outside_a_request_the_rows_are_handed_over_at_the_flush():
    from airlock.integrations.django._after_response import after_response

    assert after_response(lambda: None) is False
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, 1)
    assert [args for _, args, _ in memory_messages()] == [[1]]


def test_a_full_hand_off_publishes_inline_and_says_so(gate):
    configure_outbox({"HANDOFF_LIMIT": 3})
    heard = []

    def on_full(sender: Any, **kwargs: Any) -> None:
        heard.append((sender, kwargs))

    handoff_full.connect(on_full)
    try:
        with airlock.scope(executor=gate_executor), transaction.atomic():
            for number in range(3):
                airlock.enqueue(job, number)  # fills the hand-off; the publisher waits at the gate
        publisher = background_publisher()
        assert publisher is not None and publisher.depth == 3
        done = threading.Event()

        def second_request() -> None:
            from django.db import connections

            try:
                with airlock.scope(executor=gate_executor) as scope, transaction.atomic():
                    airlock.enqueue(job, "inline")
                heard.append(("scope", scope))
                done.set()
            finally:
                connections.close_all()

        thread = threading.Thread(target=second_request)
        thread.start()
        time.sleep(0.2)
        assert not done.is_set()  # it publishes inline, so it waits for the broker (the gate) itself
        gate.open.set()
        thread.join(10)
        assert done.is_set()
    finally:
        handoff_full.disconnect(on_full)
    (sender, kwargs), (_, scope) = heard
    assert sender is scope and kwargs == {"rows": 1, "depth": 3}
    assert ("inline", thread.name) in gate.sent  # sent by the request's own thread
    assert publisher.overflowed == 1
    settle()
    assert states() == [SENT] * 4


def test_inline_publishes_before_the_scope_returns_and_off_leaves_all_to_the_relay():
    configure_outbox({"FAST_PATH": "inline"})
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "inline")
    assert [state for _, _, state in _raw_rows()] == [SENT]
    configure_outbox({"FAST_PATH": "off"})
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "off")
    assert [state for _, _, state in _raw_rows()] == [SENT, READY]
    assert Relay(databases=["default"]).run_once().sent == 1  # available at once: nobody else will publish it
    assert [args for _, args, _ in memory_messages()] == [["inline"], ["off"]]


def test_a_relay_leaves_a_fresh_row_to_its_writer_for_the_fast_path_deadline(gate):
    with airlock.scope(executor=gate_executor), transaction.atomic():
        airlock.enqueue(job, "fresh")
    assert Relay(databases=["default"]).run_once().sent == 0  # its writer is about to publish it
    gate.open.set()
    settle()
    assert states() == [SENT]
    assert gate.sent == [("fresh", "airlock-outbox-publisher")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, "background"), (False, "off"), (None, "off"), ("inline", "inline"), ("background", "background")],
)
def test_fast_path_values(value, expected):
    assert configure_outbox({"FAST_PATH": value})["FAST_PATH"] == expected


def test_a_misspelt_fast_path_says_what_it_may_be():
    with pytest.raises(ImproperlyConfigured, match=r"'background', 'inline' or 'off'; got 'backgroud' \(did you mean"):
        configure_outbox({"FAST_PATH": "backgroud"})
    with pytest.raises(ImproperlyConfigured, match="HANDOFF_LIMIT"):
        configure_outbox({"HANDOFF_LIMIT": 0})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_publisher_and_never_sends_the_parents_rows(gate):
    with airlock.scope(executor=gate_executor), transaction.atomic():
        airlock.enqueue(job, "parent's")
    parent = background_publisher()
    assert parent is not None and parent.depth == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            from airlock.integrations.django.outbox import _background

            gate.open.set()
            time.sleep(0.2)  # the parent's batch, copied into this process, must not go
            report = f"{background_publisher() is None} {_background._publisher is None} {len(gate.sent)}"
        except BaseException as error:  # pragma: no cover - reported to the parent
            report = repr(error)
        os.write(write, report.encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == "True True 0"
    assert os.waitstatus_to_exitcode(status) == 0
    gate.open.set()
    settle()
    assert gate.sent == [("parent's", "airlock-outbox-publisher")]  # once, by the parent


# -- at exit, in a process of its own, on a Redis of its own ----------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[OwnRedis]:
    with own_redis() as started:
        yield started


def _exit_child(server: OwnRedis, count: int, **extra: Any) -> subprocess.CompletedProcess[str]:
    from django.db import connections

    names = {alias: connections[alias].settings_dict["NAME"] for alias in ("default", "other")}
    env = environment(names, server.url, f"outbox_bg_{server.port}", QUEUE, count=count, **extra)
    return subprocess.run(
        [sys.executable, "-m", "tests.outbox_process", "exit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _queued(server: OwnRedis) -> collections.Counter[str]:
    return collections.Counter(server.queued_ids(QUEUE))


def _clear(server: OwnRedis) -> None:
    server.client().delete(QUEUE)


def test_a_normal_exit_drains_the_publisher(server):
    _clear(server)
    finished = _exit_child(server, 50)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("handed ")
    assert states() == [SENT] * 50  # published and marked by the atexit drain
    counts = _queued(server)
    assert set(counts) == {intent_id for intent_id, _, _ in rows()} and set(counts.values()) == {1}


def test_a_process_killed_right_after_sending_its_ready_mark_leaves_ready_rows(server):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the mark line is PostgreSQL's")
    _clear(server)
    celery_app, _ = make_app(f"outbox_bg_{server.port}", server.url, QUEUE)  # the relay resolves the child's task
    finished = _exit_child(server, 20, end="sigkill_after_the_mark")
    assert finished.returncode == -signal.SIGKILL, finished.stderr
    deadline = time.monotonic() + 5
    while states() != [READY] * 20 and time.monotonic() < deadline:
        time.sleep(0.05)  # the server may still be running the statement the child sent
    assert states() == [READY] * 20  # decided, though the child never read the answer; nothing held
    assert _queued(server) == collections.Counter()  # killed before anything was published
    later = outbox_options()["FAST_PATH_DEADLINE"]
    assert drain_relay(Relay(databases=["default"], clock=lambda: time.time() + later)) == 20
    assert set(_queued(server).values()) == {1} and len(_queued(server)) == 20
    celery_app.pool.force_close_all()


def test_an_unhandled_sigterm_drains_then_dies_by_it(server):
    _clear(server)
    finished = _exit_child(server, 50, end="sigterm")
    assert finished.returncode == -signal.SIGTERM, finished.stderr
    assert states() == [SENT] * 50
    assert set(_queued(server).values()) == {1}


def test_what_the_drain_cannot_publish_by_its_deadline_stays_for_the_relay(server):
    _clear(server)
    celery_app, _ = make_app(f"outbox_bg_{server.port}", server.url, QUEUE)
    server.freeze()
    try:
        started = time.monotonic()
        finished = _exit_child(server, 5, options='{"DRAIN_TIMEOUT": 0.5}')
        took = time.monotonic() - started
    finally:
        server.thaw()
    assert finished.returncode == 0, finished.stderr
    assert "left for the relay at exit" in finished.stderr
    assert took < 20, took  # the drain's deadline, not the frozen broker, ended the process
    assert states() == [READY] * 5
    later = outbox_options()["FAST_PATH_DEADLINE"]
    done = Relay(databases=["default"], clock=lambda: time.time() + later).run_once()
    assert done.sent == 5
    assert set(_queued(server).values()) == {1}
    celery_app.pool.force_close_all()


def _raw_rows() -> list[tuple[str, str, str]]:
    """The rows as they are now, without waiting for the publisher."""
    from airlock.integrations.django.outbox import OutboxMessage

    return list(OutboxMessage.objects.order_by("id").values_list("intent_id", "task", "state"))


# -- seeing it: spans in the enqueue-time trace, hand-off metrics ------------------------------------


def test_the_dispatch_span_is_in_the_enqueue_time_trace_and_held_until_the_real_publish(gate):
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from airlock.integrations.django.outbox._metrics import OutboxMetrics
    from tests.otel_support import instrumented

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with instrumented() as telemetry:
        metrics = OutboxMetrics(meter_provider=provider, databases=["default"])
        try:
            tracer = telemetry.tracer_provider.get_tracer("test")
            with tracer.start_as_current_span("request") as request:
                with airlock.scope(executor=gate_executor), transaction.atomic():
                    airlock.enqueue(job, "traced")
            points = _points(reader)
            assert [point.value for point in points["airlock.outbox.handoff.depth"]] == [1]
            time.sleep(0.1)  # held in the hand-off
            gate.open.set()
            settle()
            send = telemetry.one("send job")
            assert send.context.trace_id == request.get_span_context().trace_id
            (ended,) = telemetry.named("request")
            # The request ended first; the send span covers the real publish, 100 ms later.
            assert send.end_time - ended.end_time >= 100_000_000
            assert send.attributes["airlock.intent.held_ms"] >= 0
            assert send.kind == trace.SpanKind.PRODUCER
            points = _points(reader)
            (latency,) = points["airlock.outbox.commit_to_publish"]
            assert latency.count == 1 and latency.sum >= 0.1
        finally:
            metrics.close()
            provider.shutdown()


def _points(reader: Any) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_a_publisher_whose_database_connection_died_reconnects_and_leaves_what_it_could_not_mark(caplog):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("terminates the publisher's own PostgreSQL session")
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "first")
    settle()
    with connection.cursor() as cursor:  # the publisher's session on the test database, and only that
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name NOT IN (%s, %s)",
            [APPLICATION_NAME, WRITER_LOCK],
        )
        assert cursor.fetchall() == [(True,)]
    with caplog.at_level("ERROR", "airlock.integrations.django.outbox"):
        with airlock.scope(), transaction.atomic():
            airlock.enqueue(memory_record, "unmarked")
        settle()
    assert any("could not be marked sent" in message for message in caplog.messages)
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "after")
    assert states() == [SENT, READY, SENT]  # published, but left ready: the relay sends it again
    assert [args for _, args, _ in memory_messages()] == [["first"], ["unmarked"], ["after"]]


def test_the_outboxs_own_marks_skip_the_wal_flush_on_postgresql_outside_a_transaction_only():
    from django.db import connection

    from airlock.integrations.django.outbox._store import set_state

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    configure_outbox({"FAST_PATH": "off"})
    with airlock.scope():
        airlock.enqueue(memory_record, "marked")
    ((intent_id, _, _),) = rows()
    seen: list[str] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        assert set_state(connection, [intent_id], SENT, lazy_flush=True, sent_at=1.5) == 1
        with transaction.atomic():  # never the caller's transaction: its commit keeps its own durability
            set_state(connection, [intent_id], READY, lazy_flush=True)
        # Anything but a plain id is bound as a parameter, never written into the SQL.
        set_state(connection, [intent_id, "x'); DROP TABLE airlock_outbox; --"], SENT, lazy_flush=True)
    assert seen[0].startswith("SET LOCAL synchronous_commit TO OFF; UPDATE airlock_outbox SET state = 'sent'")
    assert f"'{intent_id}'" in seen[0] and "sent_at = 1.5" in seen[0]
    assert "synchronous_commit" not in seen[1] and "%s" in seen[1]
    assert "synchronous_commit" not in seen[2] and "DROP" not in seen[2]
    assert states() == [SENT]


def test_a_ready_mark_whose_line_died_is_made_again_and_nothing_is_held():
    """The mark line's session is terminated: the next mark is sent into a dead connection."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the mark line is PostgreSQL's")
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "first")
    settle()
    assert line_for(connection) is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            [APPLICATION_NAME],
        )
        assert cursor.fetchall() == [(True,)]
    for value in ("second", "third"):
        with airlock.scope(), transaction.atomic():
            airlock.enqueue(memory_record, value)
    assert [args for _, args, _ in memory_messages()] == [["first"], ["second"], ["third"]]
    assert states() == [SENT] * 3


def test_the_ready_mark_does_not_wait_for_its_answer(gate):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the mark line is PostgreSQL's")
    line = line_for(connection)
    assert line is not None
    sent: list[str] = []
    real = line.send
    line.send = lambda statement: (sent.append(statement), real(statement))[1]  # type: ignore[method-assign]
    try:
        with airlock.scope(executor=gate_executor), transaction.atomic():
            airlock.enqueue(job, 1)
        (statement,) = sent
        assert "SET state = 'ready'" in statement
        assert gate.entered.wait(10)  # the publisher is busy at the gate: it reads answers when idle
        assert line._unanswered == [statement]  # the scope returned without the answer
        gate.open.set()
        settle()
        assert line._unanswered == []
        assert states() == [SENT]
    finally:
        del line.send


def test_without_the_mark_line_the_mark_waits_for_its_answer():
    from django.db import connection

    configure_outbox({"MARK_LINE": False})
    line = line_for(connection)
    if line is not None:
        line.confirm()
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, 1)
        assert line is None or line._unanswered == []
    # Marked on the scope's own connection before it returned: nothing left unanswered on a line.
    assert line is None or line._unanswered == []
    assert states() in ([READY], [SENT])
    assert [args for _, args, _ in memory_messages()] == [[1]]  # and none left for the next test
