"""The relay, driven directly: claims, leases, backoff, the dead letter, held rows, its commands.

Runs on PostgreSQL, and with AIRLOCK_TEST_DB=sqlite or =mariadb on those.
"""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connections, transaction

import airlock
from airlock.integrations.django.outbox import (
    DEAD,
    HELD,
    PENDING,
    READY,
    SENT,
    OutboxMessage,
    Relay,
    check_relay,
    outbox_stats,
)
from airlock.integrations.django.outbox._carriers import carrier_named
from airlock.integrations.django.outbox._commands import parse_duration
from airlock.signals.outbox import task_unresolved
from tests.djangoproject.checks import require_database
from tests.outbox_support import (
    Clock,
    make_app,
    memory_messages,
    memory_record,
    relay_outbox,
    rows,
    states,
    take_memory_messages,
    token,
    write_ready,
)
from tests.own_redis import free_port

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture(autouse=True)
def outbox():
    with relay_outbox():
        yield


@pytest.fixture
def clock() -> Clock:
    return Clock()


def relay(clock: Clock, **options) -> Relay:
    return Relay(databases=["default", "other"], clock=clock, backoff=1.0, backoff_max=8.0, **options)


def test_the_relay_publishes_ready_rows_in_order_with_their_intent_ids(clock):
    write_ready(1, 2, 3)
    done = relay(clock).run_once()
    assert done.sent == 3
    sent = memory_messages()
    assert [args for _, args, _ in sent] == [[1], [2], [3]]
    assert [task_id for task_id, _, _ in sent] == [intent_id for intent_id, _, _ in rows()]
    assert states() == [SENT] * 3
    assert relay(clock).run_once().sent == 0  # nothing twice


def test_batches_are_claimed_until_the_table_is_drained(clock):
    write_ready(*range(25))
    done = relay(clock, batch_size=4).run_once()
    assert done.sent == 25
    assert [args[0] for _, args, _ in memory_messages()] == list(range(25))


def test_pending_rows_are_not_published_and_become_held_after_hold_after(clock):
    with pytest.raises(RuntimeError), airlock.scope():
        with transaction.atomic():
            airlock.enqueue(memory_record, 1)
        # The process "dies" here: simulate it by leaving the row and never deciding.
        OutboxMessage.objects.update(written_by="gone")
        scope = airlock.get_current_scope()
        scope._entries = {}  # the dead process's memory is gone with it
        raise RuntimeError
    assert states() == [PENDING]
    assert relay(clock, hold_after=60).run_once().sent == 0
    clock.now += 61
    assert relay(clock, hold_after=60).run_once().held == 1
    assert states() == [HELD]
    assert memory_messages() == []
    out = io.StringIO()
    call_command("airlock_requeue", "--held", stdout=out)
    assert "1 row(s) ready again" in out.getvalue()
    assert relay(clock).run_once().sent == 1
    assert states() == [SENT]


def write_poison(value: str = "poison") -> OutboxMessage:
    """A row no relay can read: its payload lost its kwargs and options (a bug, a foreign writer)."""
    write_ready(value)
    poison = OutboxMessage.objects.order_by("-id")[0]
    OutboxMessage.objects.filter(pk=poison.pk).update(payload=json.dumps([[value]]))
    return poison


def test_a_row_that_always_fails_is_retried_with_backoff_then_dead_and_the_others_go(clock):
    write_ready("a", 1, "b")
    poison = write_poison()
    write_ready("c")
    worker = relay(clock, max_attempts=3)
    done = worker.run_once()
    assert (done.sent, done.failed, done.dead) == (4, 1, 0)
    poison.refresh_from_db()
    assert (poison.state, poison.attempts) == (READY, 1)
    assert "ValueError" in poison.last_error  # a malformed payload is the row's failure: an attempt spent
    assert poison.available_at > clock.now  # backing off
    assert worker.run_once().failed == 0  # not due yet
    for _ in range(2):
        clock.now += 100
        worker.run_once()
    poison.refresh_from_db()
    assert (poison.state, poison.attempts) == (DEAD, 3)
    assert [args for _, args, _ in memory_messages()] == [["a"], [1], ["b"], ["c"]]
    assert outbox_stats()["dead"] == 1
    call_command("airlock_requeue", "--dead", stdout=io.StringIO())
    poison.refresh_from_db()
    assert (poison.state, poison.attempts, poison.last_error) == (READY, 0, "")


def test_retry_delays_double_with_jitter_up_to_the_cap(clock):
    worker = relay(clock)
    for attempts, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [worker.retry_delay(attempts) for _ in range(50)]
        assert all(full / 2 <= delay <= full for delay in delays)
        assert len(set(delays)) > 1  # jittered


def test_an_unreachable_broker_spends_no_attempt_and_releases_the_batch(clock):
    _, record = make_app("outbox_relay_down", f"redis://127.0.0.1:{free_port()}/0")
    write_ready(1, 2, task=record)
    done = relay(clock).run_once()
    assert done.unreachable is not None
    assert (done.sent, done.failed, done.released) == (0, 0, 2)
    assert list(OutboxMessage.objects.values_list("state", "attempts", "claimed_by")) == [(READY, 0, "")] * 2
    assert all(at <= clock.now for at in OutboxMessage.objects.values_list("available_at", flat=True))
    OutboxMessage.objects.update(available_at=0)  # due for a relay on the real clock too
    with pytest.raises(CommandError, match="the broker is unreachable"):
        call_command("airlock_relay", "--once", stdout=io.StringIO())


def test_a_dead_relays_claim_is_taken_over_after_its_lease(clock):
    write_ready(1, 2)
    dead = relay(clock, lease=30)
    assert len(dead._claim("default", "dead-relay:1")) == 2  # claimed, then the relay dies
    survivor = relay(clock, lease=30)
    assert survivor.run_once().sent == 0
    clock.now += 31
    assert survivor.run_once().sent == 2
    assert len(memory_messages()) == 2


def test_a_stopping_relay_publishes_nothing_more_and_releases_its_batch(clock):
    write_ready(1, 2, 3)
    worker = relay(clock)
    worker.stop()
    done = worker.step("default")
    assert (done.sent, done.released) == (0, 3)
    assert list(OutboxMessage.objects.values_list("state", "attempts", "claimed_by")) == [(READY, 0, "")] * 3


def test_rows_locked_by_another_relays_claim_are_skipped_not_waited_for(clock):
    if not connections["default"].features.has_select_for_update_skip_locked:
        pytest.skip("SQLite has no SKIP LOCKED: single-relay mode")
    write_ready(1, 2, 3, 4)
    locked = threading.Event()
    release = threading.Event()

    def other_relay() -> None:
        with transaction.atomic():
            list(OutboxMessage.objects.select_for_update().order_by("id").values_list("id", flat=True)[:2])
            locked.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=other_relay)
    thread.start()
    try:
        assert locked.wait(10)
        claimed = relay(clock)._claim("default", "me:1")
        assert [row[0] for row in claimed] == list(
            OutboxMessage.objects.order_by("id").values_list("id", flat=True)[2:]
        )
    finally:
        release.set()
        thread.join()


def test_the_relay_serves_every_database(clock):
    write_ready("default")
    write_ready("other", using="other")
    assert relay(clock).run_once().sent == 2
    assert states("default") == [SENT]
    assert states("other") == [SENT]


def test_relay_once_command_reports_what_it_did():
    write_ready(1, 2)
    out = io.StringIO()
    call_command("airlock_relay", "--once", "--database", "default", stdout=out)
    assert "2 sent, 0 failed (0 dead), 0 held" in out.getvalue()
    with pytest.raises(CommandError, match="no such alias"):
        call_command("airlock_relay", "--once", "--database", "nope")


def test_requeue_needs_to_be_told_what():
    with pytest.raises(CommandError, match="--dead, --held"):
        call_command("airlock_requeue")


def test_purge_deletes_only_rows_sent_longer_ago_than_asked(clock):
    write_ready(1, 2, 3)
    relay(clock).run_once()
    OutboxMessage.objects.filter(id=OutboxMessage.objects.order_by("id")[0].id).update(sent_at=clock.now - 8 * 86400)
    write_ready(4)  # ready, never sent: never purged
    out = io.StringIO()
    call_command("airlock_purge", "--older-than", "7d", stdout=out)
    assert "1 sent row(s) deleted" in out.getvalue()
    assert sorted(states()) == [READY, SENT, SENT]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5w", 907200)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_says_how_to_write_one():
    with pytest.raises(CommandError, match=r"e\.g\. 7d"):
        call_command("airlock_purge", "--older-than", "a week")


def test_stats_count_rows_per_state_and_the_oldest_waiting(clock):
    write_ready(1, 2)
    stats = outbox_stats(now=time.time() + 10)
    assert stats["ready"] == 2
    assert stats["sent"] == 0
    assert 9 <= stats["oldest_pending_age"] <= 11


def test_metrics_report_what_waits_what_died_and_what_was_published(clock):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from airlock.integrations.django.outbox._metrics import OutboxMetrics

    reader = InMemoryMetricReader()
    metrics = OutboxMetrics(MeterProvider(metric_readers=[reader]), databases=["default"])
    write_ready(1, 2, 3)

    def values() -> dict[str, float]:
        found = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = sum(point.value for point in metric.data.data_points)
        return found

    before = values()
    assert before["airlock.outbox.pending"] == 3
    assert before["airlock.outbox.oldest_pending_age"] >= 0
    relay(clock, metrics=metrics).run_once()
    after = values()
    assert after["airlock.outbox.published"] == 3
    assert after["airlock.outbox.pending"] == 0
    assert after["airlock.outbox.dead"] == 0


def test_the_admin_action_requeues_only_dead_and_held_rows(clock):
    from django.contrib.admin import AdminSite

    from airlock.integrations.django.outbox._admin import OutboxMessageAdmin, requeue_rows

    write_ready(1, 2, 3)
    first, second, third = OutboxMessage.objects.order_by("id")
    OutboxMessage.objects.filter(pk=first.pk).update(state=DEAD, attempts=8)
    OutboxMessage.objects.filter(pk=second.pk).update(state=HELD)
    OutboxMessage.objects.filter(pk=third.pk).update(state=SENT)
    said = []
    admin = OutboxMessageAdmin(OutboxMessage, AdminSite())
    admin.message_user = lambda request, text: said.append(text)
    requeue_rows(admin, None, OutboxMessage.objects.all())
    assert states() == [READY, READY, SENT]
    assert said == ["2 row(s) are ready again; the relay will publish them."]
    assert admin.has_add_permission(None) is False


# -- a name this process cannot resolve: its configuration's error, not the row's --------------------


def write_renamed(*values) -> str:
    """Rows whose task no registry in this process has any more (renamed in a deploy); its name."""
    app, gone = make_app(f"outbox_gone_{token()}", "memory://")
    write_ready(*values, task=gone)
    app.tasks.unregister(gone.name)
    return gone.name


def test_an_unresolved_name_costs_no_attempt_is_released_at_once_and_reported_once(clock):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from airlock.integrations.django.outbox._metrics import OutboxMetrics

    reader = InMemoryMetricReader()
    gone = write_renamed("x", "y")
    write_ready("kept")
    told = []
    task_unresolved.connect(lambda sender, **kwargs: told.append((sender, kwargs)), weak=False)
    worker = relay(clock, metrics=OutboxMetrics(MeterProvider(metric_readers=[reader]), databases=["default"]))
    done = worker.run_once()
    assert (done.sent, done.failed, done.dead) == (1, 0, 0)
    fix = 'add "outbox_gone_' + gone.split("_")[-1].split(".")[0] + '"'
    assert list(done.unresolved) == [("celery", gone)] and done.unresolved[("celery", gone)].startswith(fix)
    left = OutboxMessage.objects.filter(task=gone).values_list("state", "attempts", "claimed_by", "last_error")
    assert list(left) == [(READY, 0, "", "")] * 2  # no attempt, no error on the row, claim given back
    assert all(at <= clock.now for at in OutboxMessage.objects.filter(task=gone).values_list("available_at", flat=True))
    ((sender, said),) = told
    assert sender is worker
    assert said["database"] == "default" and (said["executor"], said["task"]) == ("celery", gone)
    assert "no Celery app in this process has a task named" in said["error"] and said["fix"].startswith(fix)
    clock.now += 3600  # later passes: the name is neither claimed nor reported again
    assert worker.run_once().unresolved == {}
    assert len(told) == 1 and worker.unresolved == done.unresolved
    (point,) = [
        point
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "airlock.outbox.unresolved"
        for point in metric.data.data_points
    ]
    assert point.value == 1 and dict(point.attributes) == {"airlock.database": "default", "airlock.task": gone}


@pytest.mark.parametrize("claim", ["skip-locked", "update"], ids=["select-skip-locked", "sqlite-update"])
def test_claims_skip_the_names_this_relay_cannot_resolve(clock, claim, monkeypatch):
    connection = connections["default"]
    if claim == "skip-locked" and not connection.features.has_select_for_update_skip_locked:
        pytest.skip("SQLite has no SKIP LOCKED")
    if claim == "update" and connection.vendor == "mysql":
        pytest.skip("MariaDB/MySQL claim with SKIP LOCKED (no LIMIT inside IN (SELECT ...))")
    if claim == "update":
        monkeypatch.setattr(type(connection.features), "has_select_for_update_skip_locked", False)
    gone = write_renamed(1)
    write_ready(2)
    worker = relay(clock, batch_size=1)
    first = worker.step("default")
    assert (first.sent, first.released, list(first.unresolved)) == (0, 1, [("celery", gone)])
    assert worker.step("default").sent == 1  # not the same row again: its name is skipped
    other = write_renamed(3)
    write_ready(4)
    worker.batch_size = 10
    claimed = worker._claim("default", "me:1")
    assert [row[2] for row in claimed] == [other, memory_record.name]  # every due row but the skipped name's
    assert [args for _, args, _ in memory_messages()] == [[2]]


def test_a_relay_that_resolves_the_name_delivers_what_another_released(clock):
    app, gone = make_app(f"outbox_back_{token()}", "memory://")
    write_ready(1, task=gone)
    app.tasks.unregister(gone.name)
    blind = relay(clock)
    assert list(blind.run_once().unresolved) == [("celery", gone.name)]
    app.tasks.register(gone)  # the next relay runs the code that defines it
    assert relay(clock).run_once().sent == 1
    assert states() == [SENT]


def test_relay_once_exits_non_zero_naming_each_unresolved_task_and_its_fix():
    gone = write_renamed(1)
    write_ready(2)
    out = io.StringIO()
    with pytest.raises(CommandError, match=rf"cannot resolve 1 task name\(s\).*celery '{gone}': add \""):
        call_command("airlock_relay", "--once", "--database", "default", stdout=out)
    assert "1 sent, 0 failed" in out.getvalue()
    assert list(OutboxMessage.objects.filter(task=gone).values_list("state", "attempts")) == [(READY, 0)]


def test_check_lists_every_name_in_undelivered_rows_and_fails_on_a_miss():
    gone = write_renamed(1)
    write_ready(2, 3)
    write_ready("sent")
    OutboxMessage.objects.filter(payload__contains='"sent"').update(state=SENT)
    OutboxMessage.objects.filter(payload__startswith="[[3]").update(state=DEAD)
    found = check_relay(["default"])
    assert [(name.executor, name.task, name.rows, name.is_resolved) for name in found.names] == sorted(
        [("celery", memory_record.name, {READY: 1, DEAD: 1}, True), ("celery", gone, {READY: 1}, False)]
    )
    (missing,) = found.missing
    assert missing.fix.startswith('add "outbox_gone_') and "IMPORTS" in missing.fix
    out = io.StringIO()
    with pytest.raises(CommandError, match=rf"cannot resolve 1 task name\(s\) carried by undelivered rows.*{gone}"):
        call_command("airlock_relay", "--check", "--database", "default", stdout=out)
    assert f"default: celery {memory_record.name} (1 ready, 1 dead): resolves" in out.getvalue()
    assert f"default: celery {gone} (1 ready): UNRESOLVED: " in out.getvalue()
    assert memory_messages() == []  # a check sends nothing
    OutboxMessage.objects.filter(task=gone).delete()
    out = io.StringIO()
    call_command("airlock_relay", "--check", "--database", "default", stdout=out)
    assert "1 task name(s) in undelivered rows, 0 this process cannot resolve" in out.getvalue()


# -- seeing it: the relay's events, through the structlog bridge ----------------------------------


def test_the_relay_logs_through_the_structlog_bridge_with_stable_events(clock, caplog):
    import structlog
    from structlog.testing import capture_logs

    import airlock.integrations.structlog as airlock_structlog

    write_ready("a", "b")
    write_poison()
    structlog.reset_defaults()
    airlock_structlog.instrument()
    try:
        with capture_logs() as logs, caplog.at_level("INFO", "airlock.integrations.django.outbox"):
            worker = relay(clock, max_attempts=2)
            worker.run_once()
            clock.now += 100
            worker.run_once()
    finally:
        airlock_structlog.uninstrument()
        structlog.reset_defaults()
    by_event = {}
    for entry in logs:
        by_event.setdefault(entry["event"], []).append(entry)
    first, second = by_event["airlock.outbox.relay_batch"][:2]
    assert (first["sent"], first["failed"], first["dead"], first["database"]) == (2, 1, 0, "default")
    assert first["relay_id"] == worker.id and first["seconds"] >= 0
    (failed,) = by_event["airlock.outbox.row_failed"]
    assert failed["log_level"] == "warning" and failed["task"] == "outbox_memory.record"
    assert failed["attempts"] == 1 and failed["retry_in"] > 0 and "ValueError" in failed["error"]
    (dead,) = by_event["airlock.outbox.row_dead"]
    assert dead["log_level"] == "error" and dead["attempts"] == 2
    assert dead["intent_id"] == OutboxMessage.objects.get(state=DEAD).intent_id
    assert second["dead"] == 1
    # The bridge logs it, so the stdlib logger does not say it a second time.
    assert not [record for record in caplog.records if "dead after" in record.getMessage()]


def test_without_the_bridge_the_relay_logs_to_the_stdlib_logger(clock, caplog):
    write_poison()
    with caplog.at_level("WARNING", "airlock.integrations.django.outbox"):
        relay(clock, max_attempts=1).run_once()
    assert any("dead after 1 attempts" in record.getMessage() for record in caplog.records)


# -- the trace of a relayed message -------------------------------------------------------------


def test_a_relayed_message_is_sent_in_the_trace_it_was_enqueued_in(clock):
    """After a crash or an outage the relay sends the row: its send span joins the enqueue's trace."""
    from opentelemetry import trace

    from airlock.integrations.opentelemetry._instrumentor import SCOPE_SPAN
    from tests.otel_support import instrumented

    write_ready("untraced")
    assert len(json.loads(OutboxMessage.objects.get().payload)) == 3  # no tracing, no trace in the row
    OutboxMessage.objects.all().delete()
    with instrumented() as telemetry:
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request") as request:
            write_ready("traced")
        stored = json.loads(OutboxMessage.objects.get().payload)
        assert stored[:2] == [["traced"], {}] and "traceparent" in stored[3]
        assert relay(clock).run_once().sent == 1  # no span is current here, as in a relay process
        send = telemetry.one("send outbox_memory.record")
        (scope_span,) = [span for span in telemetry.spans if span.name == SCOPE_SPAN]
        assert send.kind == trace.SpanKind.PRODUCER
        assert send.context.trace_id == request.get_span_context().trace_id
        # A child of the span current at the enqueue (the scope's, inside the request), as a fast path's is.
        assert send.parent is not None and send.parent.span_id == scope_span.context.span_id
        assert send.attributes["airlock.outbox.relayed"] is True
        assert send.attributes["airlock.intent.id"] == rows()[0][0]
        (headers,) = [message.headers for message in take_memory_messages()]
        # The message carries the send span's context: the worker's span continues it.
        assert headers["traceparent"].split("-")[1:3] == [
            f"{send.context.trace_id:032x}",
            f"{send.context.span_id:016x}",
        ]
    assert states() == [SENT]


def test_a_relayed_send_that_fails_ends_its_span_with_the_error(clock):
    from opentelemetry.trace import StatusCode

    from tests.otel_support import instrumented

    with instrumented() as telemetry:
        with telemetry.tracer_provider.get_tracer("test").start_as_current_span("request"):
            write_ready("doomed")
        carrier = carrier_named("celery")
        original = carrier.send

        def refuse(*args, **kwargs):
            raise ValueError("the broker refused this one")

        carrier.send = refuse
        try:
            done = relay(clock).run_once()
        finally:
            carrier.send = original
        assert done.failed == 1
        send = telemetry.one("send outbox_memory.record")
        assert send.status.status_code == StatusCode.ERROR
        assert send.attributes["error.type"] == "ValueError"
