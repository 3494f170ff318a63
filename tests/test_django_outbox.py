"""The outbox inside the request: rows in the caller's transaction, scope decisions, the fast path.

Runs on PostgreSQL, and with AIRLOCK_TEST_DB=sqlite or =mariadb on those. The
broker is Celery's in-memory transport (real kombu code, no server); a broker
that is down is a Redis URL on a port nobody listens on.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
import types

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connections, transaction
from django.test.utils import CaptureQueriesContext

import airlock
from airlock import BlockTasks
from airlock.integrations.django import DjangoScope, configure_from_settings
from airlock.integrations.django.outbox import (
    HELD,
    PENDING,
    READY,
    SENT,
    Carrier,
    OutboxMessage,
    OutboxScope,
    ProcessedIntent,
    Relay,
    configure_outbox,
    deduplicate,
    first_delivery,
    register_carrier,
)
from airlock.integrations.django.outbox._precommit import waiting
from airlock.integrations.executors.celery import celery_executor
from airlock.integrations.executors.sync import sync_executor
from airlock.signals import dispatch_failed, intent_dispatched
from airlock.testing import capture
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop.models import Order
from tests.outbox_support import (
    make_app,
    memory_app,
    memory_messages,
    memory_other,
    memory_record,
    rows,
    settle,
    states,
)
from tests.own_redis import free_port

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Boom(Exception):
    pass


# Every test under both fast paths; AIRLOCK_TEST_FAST_PATHS=background (the nox matrix's
# other lanes and reruns) keeps the default only.
FAST_PATHS = os.environ.get("AIRLOCK_TEST_FAST_PATHS", "background,inline").split(",")


@pytest.fixture(autouse=True, params=FAST_PATHS)
def outbox(request):
    configure_outbox({"FAST_PATH": request.param})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    memory_messages()
    registered = set(memory_app.tasks)
    yield
    configure_outbox(None)
    for name in set(memory_app.tasks) - registered:  # each run of a test registers its own tasks
        memory_app.tasks.pop(name)


def ids_sent() -> list[str]:
    return [message[0] for message in memory_messages()]


# -- same transaction ------------------------------------------------------------------------


def test_a_row_is_written_inside_the_transaction_and_sent_after_the_commit():
    with airlock.scope(), transaction.atomic():
        order = Order.objects.create(sku="tea")
        intent = airlock.enqueue(memory_record, order.pk, note="hot")
        # It waits on the connection, to be written by the commit, in the transaction.
        assert waiting(connections["default"]) == 1
        assert states() == []
        assert memory_messages() == []
    assert waiting(connections["default"]) == 0
    ((intent_id, task, state),) = rows()
    assert (task, state) == ("outbox_memory.record", SENT)
    assert memory_messages() == [(intent_id, [order.pk], {"note": "hot"})]
    assert intent.name == "record"


def test_the_consumer_gets_the_rows_intent_id_as_its_task_id():
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, 1)
        airlock.enqueue(memory_other, 2, colour="red")
    sent = memory_messages()
    assert [(args, kwargs) for _, args, kwargs in sent] == [([1], {}), ([2], {"colour": "red"})]
    assert [task_id for task_id, _, _ in sent] == [intent_id for intent_id, _, _ in rows()]
    assert states() == [SENT, SENT]


def _outbox_inserts(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.lstrip().upper().startswith("INSERT INTO AIRLOCK_OUTBOX")]


def test_a_transactions_rows_are_one_insert_right_before_its_commit():
    with CaptureQueriesContext(connections["default"]) as captured, airlock.scope():

        def statements() -> list[str]:
            return [query["sql"] for query in captured.captured_queries]

        with transaction.atomic():
            Order.objects.create(sku="tea")
            for number in range(5):
                airlock.enqueue(memory_record, number)
            assert _outbox_inserts(statements()) == []
        inserts = _outbox_inserts(statements())
        assert len(inserts) == 1  # one statement for the five rows, in the transaction
        assert states() == [PENDING] * 5  # the scope has not decided yet
    assert states() == [SENT] * 5
    assert [args for _, args, _ in memory_messages()] == [[n] for n in range(5)]


def test_on_postgresql_the_insert_carries_the_commit_in_one_round_trip(tmp_path):
    """psycopg 3 (client-side binding, Django's default): the rows and the COMMIT are one query."""
    connection = connections["default"]
    if connection.vendor != "postgresql" or not _psycopg3_client_cursors(connection):
        pytest.skip("only PostgreSQL with psycopg 3's client-side cursors sends statements as one query")
    from psycopg import pq

    trace = tmp_path / "libpq.trace"
    with airlock.scope(), trace.open("wb") as file:
        with transaction.atomic():
            Order.objects.create(sku="tea")
            for number in range(3):
                airlock.enqueue(memory_record, number)
            pgconn = connection.connection.pgconn
            pgconn.trace(file.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        pgconn.untrace()
        assert states() == [PENDING] * 3  # committed: another connection reads them
    sent = [line for line in trace.read_text().splitlines() if line.startswith("F") and "\tQuery\t" in line]
    assert len(sent) == 1, sent  # the commit sent nothing of its own
    assert "INSERT INTO airlock_outbox" in sent[0] and sent[0].rstrip('"').endswith("; COMMIT")
    assert Order.objects.filter(sku="tea").count() == 1
    assert [args for _, args, _ in memory_messages()] == [[0], [1], [2]]


def test_a_commit_that_fails_after_the_insert_leaves_nothing_and_the_connection_usable():
    """A deferred constraint fails at the COMMIT the INSERT carries: the transaction is gone, all of it."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        pytest.skip("a constraint checked at the commit, on PostgreSQL")
    with airlock.scope(), pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(sku="doomed")
        airlock.enqueue(memory_record, 1)
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE airlock_doomed (x int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP"
            )
            cursor.execute("INSERT INTO airlock_doomed VALUES (1), (1)")  # checked at the commit
    assert not Order.objects.filter(sku="doomed").exists()
    assert rows() == []
    assert memory_messages() == []
    with airlock.scope(), transaction.atomic():  # the connection goes on
        Order.objects.create(sku="tea")
        airlock.enqueue(memory_record, 2)
    assert states() == [SENT]
    assert [args for _, args, _ in memory_messages()] == [[2]]


def _psycopg3_client_cursors(connection) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    with connection.cursor() as cursor:
        return isinstance(cursor.cursor, psycopg.ClientCursor)


def test_a_row_that_cannot_be_written_at_the_commit_rolls_the_transaction_back():
    """The commit's INSERT fails (its intent id already taken): nothing of the transaction stays."""
    other = connections.create_connection("default")  # autocommit: what it writes is committed at once
    try:
        with airlock.scope(), pytest.raises(IntegrityError), transaction.atomic():
            airlock.enqueue(memory_record, 1)
            ((_entry, _ticket, row),) = connections["default"].__dict__["_airlock_outbox_waiting"]
            with other.cursor() as cursor:  # before this transaction writes: SQLite would be locked
                cursor.execute(
                    "INSERT INTO airlock_outbox (intent_id, task, executor, payload, state, attempts, created_at, "
                    "available_at, claimed_by, written_by, last_error) "
                    "VALUES (%s, 'x', 'celery', '[]', 'sent', 0, 0, 0, '', '', '')",
                    [row[0]],
                )
            Order.objects.create(sku="doomed")
    finally:
        other.close()
    assert not Order.objects.filter(sku="doomed").exists()  # the whole transaction rolled back
    assert memory_messages() == []
    assert states() == [SENT]  # the other connection's row only


def test_a_scope_discarded_inside_the_transaction_writes_no_row_at_its_commit():
    with transaction.atomic():
        Order.objects.create(sku="tea")
        with contextlib.suppress(Boom), airlock.scope():
            airlock.enqueue(memory_record, 1)
            raise Boom
        assert waiting(connections["default"]) == 1
    assert rows() == []
    assert memory_messages() == []


def test_a_rollback_forgets_the_rows_waiting_for_the_commit():
    with airlock.scope(), pytest.raises(Boom), transaction.atomic():
        airlock.enqueue(memory_record, 1)
        assert waiting(connections["default"]) == 1
        raise Boom
    assert waiting(connections["default"]) == 0
    assert rows() == []


def test_a_rollback_leaves_no_row_and_sends_nothing():
    with airlock.scope(), pytest.raises(Boom), transaction.atomic():
        airlock.enqueue(memory_record, 1)
        raise Boom
    assert rows() == []
    assert memory_messages() == []


def test_a_rolled_back_savepoint_takes_only_its_own_row():
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "kept")
        with pytest.raises(Boom), transaction.atomic():
            airlock.enqueue(memory_record, "rolled back")
            raise Boom
        airlock.enqueue(memory_record, "kept too")
    assert [args for _, args, _ in memory_messages()] == [["kept"], ["kept too"]]
    assert states() == [SENT, SENT]


def test_a_discarded_scope_deletes_its_committed_rows():
    with pytest.raises(Boom), airlock.scope():
        with transaction.atomic():
            airlock.enqueue(memory_record, 1)
        assert states() == [PENDING]  # committed, but the scope has not decided
        raise Boom
    assert rows() == []
    assert memory_messages() == []


def test_an_intent_a_policy_refuses_at_flush_is_deleted():
    class RefuseOther:
        def on_enqueue(self, intent):
            pass

        def allows(self, intent):
            return intent.name != "other"

    with airlock.scope(RefuseOther()), transaction.atomic():
        airlock.enqueue(memory_record, 1)
        airlock.enqueue(memory_other, 2)
    assert [task for _, task, _ in rows()] == ["outbox_memory.record"]
    assert [args for _, args, _ in memory_messages()] == [[1]]


def test_a_policy_refusing_at_enqueue_writes_no_row():
    with airlock.scope(BlockTasks({"record"}, raise_on_enqueue=True)), transaction.atomic():
        with pytest.raises(airlock.PolicyViolation):
            airlock.enqueue(memory_record, 1)
        airlock.enqueue(memory_other, 2)
    assert [task for _, task, _ in rows()] == ["outbox_memory.other"]


def test_outside_a_transaction_the_row_is_written_at_flush():
    with airlock.scope():
        airlock.enqueue(memory_record, 1)
        assert rows() == []
    assert states() == [SENT]
    assert len(memory_messages()) == 1


def test_a_scope_inside_the_transaction_marks_ready_in_it_and_sends_after_commit():
    with transaction.atomic():
        with airlock.scope():
            airlock.enqueue(memory_record, 1)
        assert states() == [READY]
        assert memory_messages() == []
    assert states() == [SENT]
    assert len(memory_messages()) == 1


def test_inner_scope_rows_follow_the_outer_scopes_discard():
    with pytest.raises(Boom), airlock.scope():
        with airlock.scope(), transaction.atomic():
            airlock.enqueue(memory_record, 1)
        assert states() == [PENDING]  # captured by the outer scope, still undecided
        raise Boom
    assert rows() == []
    assert memory_messages() == []


def test_a_late_decision_still_wins_over_a_held_row():
    with airlock.scope():
        with transaction.atomic():
            airlock.enqueue(memory_record, 1)
        OutboxMessage.objects.update(state=HELD)  # as a relay does when the scope takes too long
    assert states() == [SENT]


# -- what a row holds ----------------------------------------------------------------------


def test_an_argument_json_cannot_hold_is_refused_at_enqueue_naming_it():
    with airlock.scope() as scope, transaction.atomic():
        with pytest.raises(TypeError, match=r"keyword argument 'when' of outbox_memory.record cannot be stored"):
            airlock.enqueue(memory_record, 1, when=datetime.datetime(2026, 1, 1))
        with pytest.raises(TypeError, match=r"positional argument 1 of outbox_memory.record"):
            airlock.enqueue(memory_record, 1, {1, 2})
        assert scope.intents == []
        # The transaction is still usable, and the next intent goes.
        airlock.enqueue(memory_record, 2)
    assert [args for _, args, _ in memory_messages()] == [[2]]


def test_a_dispatch_option_json_cannot_hold_is_refused_naming_it():
    with airlock.scope(), transaction.atomic():
        with pytest.raises(TypeError, match=r"_dispatch_options\['eta'\]"):
            airlock.enqueue(memory_record, 1, _dispatch_options={"eta": datetime.datetime(2026, 1, 1)})
    assert rows() == []


def test_a_task_that_is_not_registered_is_refused_at_enqueue():
    def plain(order_id):
        return order_id

    with airlock.scope(), pytest.raises(TypeError, match="not a registered Celery task"):
        airlock.enqueue(plain, 1)


def test_the_sync_executor_is_refused_with_the_way_out():
    with airlock.scope(executor=sync_executor), pytest.raises(TypeError, match="outbox=False"):
        airlock.enqueue(memory_record, 1)


@pytest.mark.parametrize("rolled_back", [False, True], ids=["committed", "rolled-back"])
def test_the_way_out_nested_in_an_outbox_scope_runs_in_process_after_the_commit(rolled_back):
    # The advice above, taken inside an outbox scope (a service's scope in a request):
    # the outer scope captures the intent, and it keeps its scope's executor, without a row.
    ran = []
    with airlock.scope():
        with pytest.raises(Boom) if rolled_back else contextlib.nullcontext(), transaction.atomic():
            airlock.enqueue(memory_record, 1)
            with airlock.scope(executor=sync_executor, outbox=False):
                airlock.enqueue(ran.append, "audit")
            assert ran == []
            if rolled_back:
                raise Boom
    assert ran == ([] if rolled_back else ["audit"])
    assert [task for _, task, _ in rows()] == ([] if rolled_back else ["outbox_memory.record"])
    assert len(ids_sent()) == (0 if rolled_back else 1)


def test_arguments_are_snapshotted_at_enqueue():
    items = ["tea"]
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, items)
        items.append("changed after enqueue")
    assert [args for _, args, _ in memory_messages()] == [[["tea"]]]


# -- the fast path --------------------------------------------------------------------------


def test_a_broker_that_is_down_fails_nothing_and_leaves_rows_for_the_relay(caplog):
    _, record = make_app("outbox_down", f"redis://127.0.0.1:{free_port()}/0")
    failures = []
    dispatch_failed.connect(lambda scope, intent, error: failures.append(intent), weak=False)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "airlock.integrations.django.outbox"):
        with airlock.scope(), transaction.atomic():
            for number in range(10):
                airlock.enqueue(record, number)
        took = time.monotonic() - started
        settle()  # the background publisher logs in its own thread
    assert states() == [READY] * 10
    # It stopped at the first sign the broker is unreachable: one report, not ten.
    assert len(failures) == 1
    assert any("10 intent(s) left for the relay" in message for message in caplog.messages)
    assert took < 5, took


def test_inline_the_scope_returns_with_its_rows_decided_sent_or_released_to_the_relay():
    """No helper waits here: what another connection reads right after the scope is final."""
    configure_outbox({"FAST_PATH": "inline"})
    _, down = make_app("outbox_down_inline", f"redis://127.0.0.1:{free_port()}/0")
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "up")
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(down, "down")
    now = time.time()
    reader = connections.create_connection("default")
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT state, available_at FROM airlock_outbox ORDER BY id")
            (up, _), (left, available) = cursor.fetchall()
    finally:
        reader.close()
    assert up == SENT
    assert left == READY and available <= now  # the relay may take it at once: no grace set again
    assert [args for _, args, _ in memory_messages()] == [["up"]]


def test_published_rows_are_reported_on_intent_dispatched():
    seen = []
    intent_dispatched.connect(lambda scope, intent, result: seen.append((intent.name, result.id)), weak=False)
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, 1)
    assert seen == [("record", rows()[0][0])]


def test_fast_path_off_leaves_every_row_ready():
    configure_outbox({"FAST_PATH": False})
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, 1)
    assert states() == [READY]
    assert memory_messages() == []


def test_capture_records_what_the_fast_path_would_publish():
    with capture() as captured:
        with airlock.scope(), transaction.atomic():
            airlock.enqueue(memory_record, 7)
    assert [intent.args for intent in captured.dispatched] == [(7,)]
    assert memory_messages() == []


# -- switching it on and off ------------------------------------------------------------------


def test_outbox_false_is_a_plain_django_scope():
    with airlock.scope(outbox=False), transaction.atomic():
        airlock.enqueue(memory_record, 1)
    assert rows() == []
    assert len(memory_messages()) == 1


def test_the_setting_makes_the_outbox_scope_the_default():
    chosen = configure_from_settings({"OUTBOX": True, "EXECUTOR": celery_executor})
    assert chosen["scope_cls"] is OutboxScope
    chosen = configure_from_settings({"EXECUTOR": celery_executor})
    assert chosen["scope_cls"] is DjangoScope


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"LEASSE": 5}, "did you mean 'LEASE'"),
        ({"LEASE": -1}, "'LEASE'] must be a number of seconds"),
        ({"BATCH_SIZE": 0}, "'BATCH_SIZE'] must be an int"),
        ({"TASKS": ["no.such.module.task"]}, "does not import"),
        ("yes", "must be True, False or a dict"),
    ],
    ids=["typo", "negative", "zero-batch", "bad-path", "not-a-dict"],
)
def test_bad_outbox_settings_fail_at_start_up(value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        configure_from_settings({"OUTBOX": value})


def test_a_scope_class_that_would_bypass_the_outbox_is_refused():
    with pytest.raises(ImproperlyConfigured, match=r"subclass airlock\.integrations\.django\.outbox\.OutboxScope"):
        configure_from_settings({"OUTBOX": True, "SCOPE": DjangoScope})


def test_rows_live_on_the_scopes_database():
    with airlock.scope(using="other"), transaction.atomic(using="other"):
        airlock.enqueue(memory_record, "other")
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(memory_record, "default")
    assert states("other") == [SENT]
    assert states("default") == [SENT]
    assert rows("other")[0][0] != rows("default")[0][0]


def test_a_rollback_on_the_other_database_leaves_no_row_there():
    with airlock.scope(using="other"), pytest.raises(Boom), transaction.atomic(using="other"):
        airlock.enqueue(memory_record, 1)
        raise Boom
    assert rows("other") == []
    assert connections["other"].in_atomic_block is False


# -- consumers dropping duplicates -------------------------------------------------------------


def test_first_delivery_is_true_once_per_intent_id():
    assert first_delivery("a" * 32) is True
    assert first_delivery("a" * 32) is False
    assert first_delivery("b" * 32) is True


def test_deduplicate_runs_the_body_once_and_forgets_a_run_that_failed():
    runs = []

    @deduplicate(id_of=lambda intent_id, fail=False: intent_id)
    def consume(intent_id, fail=False):
        runs.append(intent_id)
        Order.objects.create(sku=intent_id[:10])
        if fail:
            raise Boom

    with pytest.raises(Boom):
        consume("c" * 32, fail=True)
    assert ProcessedIntent.objects.count() == 0  # rolled back with the body's work
    assert Order.objects.count() == 0
    assert consume("c" * 32) is None
    consume("c" * 32)
    assert runs == ["c" * 32] * 2  # the failed run, then one more: the third was dropped
    assert Order.objects.count() == 1


def test_deduplicate_uses_celerys_task_id():
    runs = []

    @memory_app.task(name="outbox_memory.deduped", bind=True, shared=False)
    @deduplicate
    def deduped(self, value):
        runs.append((self.request.id, value))

    deduped.apply((1,), task_id="d" * 32)
    deduped.apply((1,), task_id="d" * 32)
    deduped.apply((2,), task_id="e" * 32)
    assert runs == [("d" * 32, 1), ("e" * 32, 2)]


def test_deduplicate_refuses_an_async_body_where_it_is_written():
    with pytest.raises(TypeError, match=r"consume is async.*async_to_sync"):

        @deduplicate(id_of=lambda: "f" * 32)
        async def consume():
            pass

    assert ProcessedIntent.objects.count() == 0


def test_deduplicate_refuses_an_awaitable_result_and_keeps_no_record():
    """An async body behind a sync face (a wrapper returning its coroutine): refused when it runs, no record."""

    async def work(intent_id):
        Order.objects.create(sku="never")

    consume = deduplicate(lambda intent_id: work(intent_id), id_of=lambda intent_id: intent_id)
    with pytest.raises(TypeError, match="would run after that transaction closed"):
        consume("f" * 32)
    assert ProcessedIntent.objects.count() == 0  # the next delivery runs
    assert Order.objects.count() == 0


def test_deduplicate_without_an_id_says_where_to_get_one():
    @deduplicate
    def consume():
        pass

    with pytest.raises(RuntimeError, match="pass id_of="):
        consume()


# -- docs/reliability.md's examples run ----------------------------------------------------------


def _doc_blocks() -> tuple[str, str]:
    """The page's settings block (the first) and its Celery consumer (the block with ``@app.task``)."""
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    return blocks[0], next(block for block in blocks if "@app.task" in block)


def test_the_reliability_pages_settings_are_accepted():
    settings_block, _ = _doc_blocks()
    namespace: dict = {}
    exec(settings_block.replace("[...,", "["), namespace)
    chosen = configure_from_settings(namespace["AIRLOCK"])
    assert chosen["scope_cls"] is OutboxScope


def test_the_reliability_pages_consumer_drops_a_second_delivery():
    _, consumer_block = _doc_blocks()
    # Registered on memory_app only (not shared with every later Celery app, which a
    # second run of this test would make a duplicate there).
    app = types.SimpleNamespace(task=lambda *args, **options: memory_app.task(*args, shared=False, **options))
    namespace = {"app": app}
    code = consumer_block.replace("    ...", "    ran.append(order_id)")
    exec(code, {**namespace, "ran": (ran := []), "__name__": "docs_reliability"}, namespace)
    send_receipt = namespace["send_receipt"]
    send_receipt.apply((5,), task_id="f" * 32)
    send_receipt.apply((5,), task_id="f" * 32)
    assert ran == [5]


# -- the hook for other queues (django.tasks plugs in here) ------------------------------------


def test_a_registered_carrier_carries_another_executors_intents_through_fast_path_and_relay():
    sent = []

    def my_executor(intent):
        raise AssertionError("the outbox publishes through the carrier, not the executor")

    def job(value):
        return value

    class MyCarrier(Carrier):
        key = "mine"

        def name_of(self, task):
            return f"my.{task.__name__}"

        def resolve(self, name):
            assert name == "my.job"
            return job

        def send(self, task, args, kwargs, options, intent_id):
            sent.append((task, args, intent_id))

    register_carrier(my_executor, MyCarrier())
    with airlock.scope(executor=my_executor), transaction.atomic():
        airlock.enqueue(job, 1)
    settle()  # the fast path's publish of 1 is done before the relay sends 2
    configure_outbox({"FAST_PATH": False})
    with airlock.scope(executor=my_executor), transaction.atomic():
        airlock.enqueue(job, 2)
    assert Relay(databases=["default"]).run_once().sent == 1
    ids = [intent_id for intent_id, _, _ in rows()]
    assert sent == [(job, [1], ids[0]), (job, [2], ids[1])]
    assert [task for _, task, _ in rows()] == ["my.job", "my.job"]
