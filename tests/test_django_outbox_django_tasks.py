"""``django.tasks`` through the outbox: a row, the fast path or the relay, a real ``db_worker``.

The end-to-end runs use django-tasks-db on PostgreSQL with one ``db_worker``
subprocess for the module (as ``tests/test_django_tasks_worker.py``), serving the
``airlock_db`` backend; ``transaction=True`` so what the test commits is what the
worker sees. The ImmediateBackend runs, the refusals at enqueue and the carrier's
glue need no worker (they also run on SQLite). The tests at the top run on every
Python; the rest need Django 6, so Python 3.12+.

A broker being down means nothing for a database backend, so the relay's part is
shown with the fast path off: the row waits ``ready`` until ``airlock_relay --once``
sends it. A second delivery of one row is what a relay that published and died
before marking the row ``sent`` leaves: the row ``ready`` again.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from time import time
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction

import airlock
from airlock.integrations.django.outbox import (
    READY,
    SENT,
    Carrier,
    OutboxMessage,
    OutboxScope,
    ProcessedIntent,
    Relay,
    configure_outbox,
)
from airlock.integrations.django.outbox._carriers import carrier_for, carrier_named
from airlock.integrations.django.outbox._store import insert
from airlock.signals import intent_dispatched
from tests.djangoproject.checks import require_database
from tests.outbox_support import rows, states

require_database()

try:
    import django.tasks  # noqa: F401
except ImportError:
    HAS_TASKS = False
else:
    HAS_TASKS = True

pytestmark = pytest.mark.django_db(transaction=True, databases=["default"])

needs_tasks = pytest.mark.skipif(
    not HAS_TASKS, reason=f"django.tasks needs Django 6, which needs Python 3.12+ (this is {sys.version.split()[0]})"
)

ONCE = "tests.django_tasks_support.outbox_tasks.once"


# -- the glue, on every Python ---------------------------------------------------------------


def test_an_executor_it_cannot_carry_is_told_django_tasks_is_one_it_can():
    def executor(intent: Any) -> None:
        return None

    with pytest.raises(TypeError, match=r"it needs a queue executor \(.*django_tasks\)"):
        carrier_for(executor)


def test_a_carrier_stores_a_copy_of_the_options_by_default():
    options = {"queue": "emails"}
    stored = Carrier().stored_options(object(), options)
    assert stored == options and stored is not options
    assert Carrier().stored_options(object(), None) == {}


def test_a_django_tasks_row_the_relay_cannot_resolve_is_never_imported_and_waits_alone():
    """A row naming a task outside ``OUTBOX["TASKS"]`` (or, before Django 6, any django_tasks row) is
    never imported: the relay reports the name with its fix and leaves the row ready, no attempt spent
    (the relay's configuration, not the row, is at fault), and the rows around it still go."""
    from tests.outbox_support import memory_messages, memory_record

    configure_outbox({"FAST_PATH": False})
    try:
        now = time()
        payload = json.dumps([["x"], {}, {}])
        insert(
            connection,
            [
                ("bad-django-tasks-row", "os.system", "django_tasks", payload, READY, now, now, "test"),
                ("good-celery-row", memory_record.name, "celery", payload, READY, now, now, "test"),
            ],
        )
        done = Relay(databases=["default"]).run_once()
    finally:
        configure_outbox(None)
    assert (done.sent, done.failed, done.sent_ids) == (1, 0, ["good-celery-row"])
    bad = OutboxMessage.objects.get(intent_id="bad-django-tasks-row")
    assert (bad.state, bad.attempts, bad.last_error) == (READY, 0, "")
    expected = (
        'add "os.system" to settings.AIRLOCK["OUTBOX"]["TASKS"]' if HAS_TASKS else "needs Django 6's django.tasks"
    )
    assert expected in done.unresolved[("django_tasks", "os.system")]
    assert [task_id for task_id, _, _ in memory_messages()] == ["good-celery-row"]


@pytest.mark.skipif(HAS_TASKS, reason="this Django has django.tasks")
def test_before_django_6_the_carrier_says_what_it_needs():
    with pytest.raises(ImportError, match=r"needs Django 6's django.tasks \(Python 3.12 or newer\)"):
        carrier_named("django_tasks")


# -- with django.tasks (Django 6) ---------------------------------------------------------------

if HAS_TASKS:
    from django.tasks import TaskResultStatus
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from airlock.integrations.executors.django_tasks import INTENT_KWARG, django_tasks_executor
    from tests.django_tasks_support import Worker, wait_for
    from tests.django_tasks_support.outbox_tasks import (
        LISTED,
        async_now,
        inner_now,
        once,
        once_now,
        outer_now,
        plain,
        unlisted,
    )
    from tests.djangoproject.shop.models import Order

    FINISHED = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)


@pytest.fixture
def outbox() -> Iterator[None]:
    """The outbox on, for django_tasks_executor, fast path off (a test turns it on)."""
    configure_outbox({"FAST_PATH": False, "TASKS": LISTED})
    airlock.configure(scope_cls=OutboxScope, executor=django_tasks_executor)
    yield
    configure_outbox(None)


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One db_worker for the module, on the session's test database."""
    from tests.conftest import require_service
    from tests.djangoproject import settings

    if settings.ENGINE != "postgres":
        pytest.skip("the db_worker subprocess runs on the PostgreSQL test database; SQLite runs skip it")
    require_service("postgres")
    request.getfixturevalue("django_db_setup")
    with open(tmp_path_factory.mktemp("db_worker") / "db_worker.log", "w+b") as log:
        running = Worker(connection.settings_dict["NAME"], "airlock_db", log)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def idle(worker: Any) -> Iterator[Any]:
    """The worker, left idle before the test's teardown empties the tables under it."""
    yield worker
    pending = DBTaskResult.objects.exclude(status__in=FINISHED)
    wait_for(lambda: not pending.exists(), what="an idle worker", worker=worker)


def finished(worker: Any, *, count: int, **filters: object) -> list[Any]:
    """Wait until ``count`` finished task rows match ``filters``; return them in the order they finished."""

    def probe() -> list[Any] | None:
        found = list(DBTaskResult.objects.finished().filter(**filters).order_by("finished_at"))
        return found if len(found) >= count else None

    return wait_for(probe, what=f"{count} finished task(s) matching {filters}", worker=worker)


def skus() -> list[str]:
    return sorted(Order.objects.values_list("sku", flat=True))


def relay_once() -> str:
    out = StringIO()
    call_command("airlock_relay", "--once", "--database", "default", stdout=out)
    return out.getvalue()


@needs_tasks
def test_the_fast_path_sends_at_commit_and_the_worker_runs_it_under_its_intent_id(outbox, idle):
    configure_outbox({"TASKS": LISTED})  # the fast path on
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(once, "fast", 2, colour="red", _dispatch_options={"queue_name": "emails", "priority": 7})
        assert not DBTaskResult.objects.exists()
    [(intent_id, name, state)] = rows()
    assert (name, state) == (ONCE, SENT)
    [run] = finished(idle, count=1)
    assert run.status == TaskResultStatus.SUCCESSFUL, run.traceback
    assert (run.priority, run.queue_name) == (7, "emails")
    assert run.return_value == {"intent_id": intent_id, "args": [2], "kwargs": {"colour": "red"}}
    # The id travels as a keyword stored with the task: the result id is the backend's own.
    assert run.args_kwargs["kwargs"][INTENT_KWARG] == intent_id
    assert run.id.hex != intent_id
    assert skus() == ["fast"]


@needs_tasks
def test_the_relay_sends_what_was_left_and_a_second_delivery_is_dropped(outbox, idle):
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(once, "relayed")
    assert states() == [READY]
    assert not DBTaskResult.objects.exists()
    assert "1 sent, 0 failed" in relay_once()
    [(intent_id, _, state)] = rows()
    assert state == SENT
    [first] = finished(idle, count=1)
    assert first.return_value["intent_id"] == intent_id

    OutboxMessage.objects.update(state=READY, available_at=0)
    assert Relay(databases=["default"]).run_once().sent_ids == [intent_id]
    first_again, second = finished(idle, count=2)
    assert first_again.id == first.id
    assert second.args_kwargs["kwargs"][INTENT_KWARG] == intent_id
    assert second.status == TaskResultStatus.SUCCESSFUL, second.traceback
    assert second.return_value is None, "deduplicate dropped the second delivery"
    assert skus() == ["relayed"]
    assert ProcessedIntent.objects.filter(intent_id=intent_id).count() == 1


@needs_tasks
def test_run_after_and_the_tasks_own_using_survive_the_row(outbox, idle):
    run_after = timezone.now() + timedelta(seconds=1)
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(once.using(priority=-5), "later", _dispatch_options={"run_after": run_after})
    [stored] = OutboxMessage.objects.values_list("payload", flat=True)
    assert json.loads(stored)[2] == {"run_after": run_after.isoformat(), "priority": -5}
    assert Relay(databases=["default"]).run_once().sent == 1
    [run] = finished(idle, count=1)
    assert run.status == TaskResultStatus.SUCCESSFUL, run.traceback
    assert (run.run_after, run.priority) == (run_after, -5)
    assert run.started_at >= run_after


@needs_tasks
def test_a_plain_task_is_delivered_without_the_intent_keyword(outbox, idle):
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(plain, "plain", colour="blue")
    assert Relay(databases=["default"]).run_once().sent == 1
    [run] = finished(idle, count=1)
    assert run.status == TaskResultStatus.SUCCESSFUL, run.traceback
    assert run.return_value == {"kwargs": {"colour": "blue"}, "intent_id": None}


@needs_tasks
def test_a_plain_enqueue_held_by_airlock_backend_goes_through_the_outbox(outbox, idle):
    """``plain`` is bound to an AirlockBackend: its own ``.enqueue()`` becomes a row too."""
    with airlock.scope(), transaction.atomic():
        handle = plain.enqueue("held", colour="green")
    assert [name for _, name, _ in rows()] == ["tests.django_tasks_support.outbox_tasks.plain"]
    assert not DBTaskResult.objects.exists()
    assert Relay(databases=["default"]).run_once().sent == 1
    [run] = finished(idle, count=1)
    assert run.return_value == {"kwargs": {"colour": "green"}, "intent_id": None}
    # The send happened in the relay (any process), which cannot reach this handle.
    assert not handle.is_sent


@needs_tasks
def test_rollbacks_leave_nothing(outbox):
    with pytest.raises(RuntimeError), transaction.atomic():
        with airlock.scope():
            airlock.enqueue(once, "rolled-back")
        raise RuntimeError("roll back")
    assert rows() == []
    with transaction.atomic(), airlock.scope():
        airlock.enqueue(once_now, "kept")
        with contextlib.suppress(RuntimeError), transaction.atomic():
            airlock.enqueue(once_now, "in-a-savepoint")
            raise RuntimeError("roll the savepoint back")
    assert [name for _, name, _ in rows()] == ["tests.django_tasks_support.outbox_tasks.once_now"]
    assert Relay(databases=["default"]).run_once().sent == 1
    assert skus() == ["kept"]
    assert not DBTaskResult.objects.exists()


@needs_tasks
def test_a_task_the_relay_could_not_resolve_is_refused_at_enqueue(outbox):
    def helper(label: str) -> None:
        return None

    with airlock.scope() as scope, transaction.atomic():
        with pytest.raises(
            TypeError,
            match=r"outbox_tasks\.unlisted only if it is listed in settings\.AIRLOCK\['OUTBOX'\]\['TASKS'\].*"
            r"add 'tests\.django_tasks_support\.outbox_tasks\.unlisted' to it",
        ):
            airlock.enqueue(unlisted, "unlisted")
        with pytest.raises(TypeError, match=r"only if it is a django\.tasks Task"):
            airlock.enqueue(helper, "helper")
        assert scope.intents == []
        airlock.enqueue(once_now, "after")  # the transaction is still usable
    assert [name for _, name, _ in rows()] == ["tests.django_tasks_support.outbox_tasks.once_now"]


@needs_tasks
def test_an_option_the_backend_would_refuse_is_refused_at_enqueue(outbox):
    with airlock.scope() as scope, transaction.atomic():
        with pytest.raises(ValueError, match=r"has no queue 'nope': its QUEUES are 'default', 'emails'"):
            airlock.enqueue(once, "x", _dispatch_options={"queue_name": "nope"})
        with pytest.raises(ValueError, match=r"run_after must be an aware datetime"):
            airlock.enqueue(once, "x", _dispatch_options={"run_after": timezone.now().replace(tzinfo=None)})
        with pytest.raises(TypeError, match=r"'countdown'"):
            airlock.enqueue(once, "x", _dispatch_options={"countdown": 3})
        with pytest.raises(ValueError, match=r"cannot take priority=5: the backend does not support priorities"):
            airlock.enqueue(once_now.using(backend="plain"), "x", _dispatch_options={"priority": 5})
        assert scope.intents == []
    assert rows() == []


def sent_now(task: Any, *args: Any) -> tuple[str, Any]:
    """Enqueue ``task`` through the outbox with the fast path on; return the row's intent id and
    the ``TaskResult`` the send returned (an ImmediateBackend's has run the task already)."""
    configure_outbox({"TASKS": LISTED})
    results: list[Any] = []
    intent_dispatched.connect(lambda sender, intent, result, **extra: results.append(result), weak=False)
    with airlock.scope(), transaction.atomic():
        airlock.enqueue(task, *args)
        assert skus() == []
    [(intent_id, _, state)] = rows()
    assert state == SENT
    [result] = results
    assert result.status == TaskResultStatus.SUCCESSFUL
    return intent_id, result


@needs_tasks
def test_the_immediate_backend_runs_it_under_its_intent_id_and_drops_a_second_delivery(outbox):
    intent_id, result = sent_now(once_now, "now")
    assert result.return_value == intent_id
    assert skus() == ["now"]

    OutboxMessage.objects.update(state=READY, available_at=0)
    assert Relay(databases=["default"]).run_once().sent_ids == [intent_id]
    assert skus() == ["now"]
    assert ProcessedIntent.objects.filter(intent_id=intent_id).count() == 1


@needs_tasks
def test_a_task_run_inside_another_does_not_see_the_outer_intent_id(outbox):
    intent_id, result = sent_now(outer_now)
    assert result.return_value == {"outer": intent_id, "inner": None, "outer_after": intent_id}
    assert inner_now.call() is None  # and outside any run there is none either


@needs_tasks
def test_an_async_task_sees_its_intent_id_too(outbox):
    intent_id, result = sent_now(async_now)
    assert result.return_value == intent_id


@needs_tasks
def test_the_carrier_keeps_what_using_changed_and_stores_run_after_as_text(outbox):
    carrier = carrier_for(django_tasks_executor)
    when = timezone.now()
    stored = carrier.stored_options(once.using(queue_name="emails", priority=3), {"run_after": when, "priority": 4})
    assert stored == {"run_after": when.isoformat(), "priority": 4, "queue_name": "emails"}
    assert carrier.stored_options(once, None) == {}
    assert carrier.name_of(once.using(priority=3)) == ONCE
    assert carrier.resolve(ONCE) is once
    with pytest.raises(LookupError, match=r"not a django\.tasks Task listed"):
        carrier.resolve("tests.django_tasks_support.outbox_tasks.unlisted")
