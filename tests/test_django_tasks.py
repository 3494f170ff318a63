"""Django's tasks framework in one process: the executor, its enqueue-time checks, the
task-run scope on ``ImmediateBackend`` and ``AirlockBackend`` over the three real backends.

The ``db_worker`` end-to-end tests are in ``test_django_tasks_worker.py``.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest

pytest.importorskip(
    "django.tasks", reason=f"django.tasks needs Django 6, which needs Python 3.12+ (this is {sys.version.split()[0]})"
)

from django.db import models, transaction
from django.tasks import TaskResult, TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTaskBackend
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

import airlock
from airlock import AssertNoEffects, PolicyViolation, signals
from airlock._executors import sync_executor
from airlock.integrations.django import DjangoScope
from airlock.integrations.django_tasks import AirlockBackend, AirlockTaskResult
from airlock.integrations.executors.django_tasks import TRACE_KWARG, django_tasks_executor
from tests.django_tasks_support import tasks
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop.models import Order
from tests.otel_support import instrumented

require_database()

# Most tests run inside the test's own transaction (rolled back after it, which is
# fast); the few about commits and rollbacks mark themselves ``committing``.
pytestmark = pytest.mark.django_db
committing = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Boom(Exception):
    pass


def stored(**filters: object) -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(**filters).order_by("enqueued_at"))


def dummy_results() -> list[TaskResult]:
    return list(task_backends["dummy"].results)


@pytest.fixture(autouse=True)
def _empty_dummy_backends():
    for alias in ("dummy", "airlock_dummy"):
        task_backends[alias].clear()


def plain_function(n: int) -> int:
    return n * 2


# -- the executor --------------------------------------------------------------------


def test_executor_enqueues_on_the_tasks_backend_with_its_options():
    later = timezone.now() + timedelta(hours=1)
    dispatched = []
    signals.intent_dispatched.connect(lambda sender, intent, result: dispatched.append((intent, result)), weak=False)
    dummy_record = tasks.record.using(backend="dummy")
    with airlock.scope(executor=django_tasks_executor):
        airlock.enqueue(dummy_record, "plain", 1, flag=True)
        airlock.enqueue(
            dummy_record, "options", _dispatch_options={"priority": 7, "queue_name": "emails", "run_after": later}
        )
        assert dummy_results() == []
    plain, with_options = dummy_results()
    assert (plain.args, plain.kwargs) == (["plain", 1], {"flag": True})
    assert (plain.task.priority, plain.task.queue_name, plain.task.run_after) == (0, "default", None)
    assert (with_options.task.priority, with_options.task.queue_name) == (7, "emails")
    assert with_options.task.run_after == later
    assert [intent.name for intent, _ in dispatched] == ["record", "record"]
    assert [result.id for _, result in dispatched] == [plain.id, with_options.id]


def test_executor_backend_option_moves_the_task():
    with airlock.scope(executor=django_tasks_executor):
        airlock.enqueue(tasks.record, "moved", _dispatch_options={"backend": "dummy"})
    [result] = dummy_results()
    assert result.backend == "dummy" and result.args == ["moved"]
    assert stored() == []


def test_executor_calls_a_plain_function_in_process():
    results = []
    signals.intent_dispatched.connect(lambda sender, intent, result: results.append(result), weak=False)
    with airlock.scope(executor=django_tasks_executor):
        airlock.enqueue(plain_function, 21)
    assert results == [42]


def test_arguments_are_copied_at_enqueue():
    items = ["tea"]
    with airlock.scope(executor=django_tasks_executor):
        airlock.enqueue(tasks.record.using(backend="dummy"), "copied", items, {"note": items})
        items.append("added after the enqueue")
    [result] = dummy_results()
    assert result.args == ["copied", ["tea"], {"note": ["tea"]}]


# -- enqueue-time checks ----------------------------------------------------------------

later = timezone.now() + timedelta(hours=1)


@pytest.mark.parametrize(
    ("task", "args", "options", "error", "words"),
    [
        (tasks.record, (), {"prority": 3}, TypeError, ["'prority'", "did you mean 'priority'"]),
        (tasks.record, (), {"queue": "emails"}, TypeError, ["'queue'", "did you mean 'queue_name'"]),
        (tasks.record.using(backend="default"), (), {"run_after": later}, ValueError, ["run_after", "supports_defer"]),
        (tasks.record.using(backend="plain"), (), {"priority": 5}, ValueError, ["priority=5", "supports_priority"]),
        (tasks.record, (), {"priority": 101}, ValueError, ["priority", "-100", "100"]),
        (tasks.record, (), {"queue_name": "sms"}, ValueError, ["'sms'", "'default', 'emails'", "QUEUES"]),
        (tasks.record, (), {"backend": "nowhere"}, ValueError, ["'nowhere'", "settings.TASKS"]),
        (tasks.record, (), {"run_after": later.replace(tzinfo=None)}, ValueError, ["aware"]),
        (tasks.record, (timezone.now(),), None, TypeError, ["args[1]", "datetime", "ISO string"]),
        (tasks.record, ({"x": {1, 2}},), None, TypeError, ["args[1]['x']", "builtins.set"]),
        (tasks.record, ({7: "seven"},), None, TypeError, ["args[1][7]", "not a string"]),
        (tasks.record, (float("nan"),), None, TypeError, ["args[1]", "NaN"]),
        (tasks.record, (Decimal("1.5"),), None, TypeError, ["args[1]", "decimal.Decimal"]),
        (plain_function, (1,), {"priority": 1}, TypeError, ["not a django.tasks Task", "in-process"]),
        (tasks.child, ("extra",), None, TypeError, ["child(label)", "cannot be called with (str, str)"]),
        (tasks.with_context, ("extra",), None, TypeError, ["with_context(label)", "too many"]),
    ],
    ids=[
        "unknown-option",
        "unknown-option-queue",
        "run_after-without-defer",
        "priority-without-support",
        "priority-out-of-range",
        "unknown-queue",
        "unknown-backend",
        "naive-run_after",
        "datetime-argument",
        "set-argument",
        "int-dict-key",
        "nan-argument",
        "decimal-argument",
        "options-on-plain-function",
        "too-many-arguments",
        "takes-context-too-many",
    ],
)
def test_bad_input_is_refused_at_enqueue_with_nothing_sent(task, args, options, error, words):
    with transaction.atomic(), airlock.scope(executor=django_tasks_executor) as scope:
        with pytest.raises(error) as raised:
            airlock.enqueue(task, "bad", *args, _dispatch_options=options)
        assert scope.intents == []
    for word in words:
        assert word in str(raised.value)
    assert stored() == [] and dummy_results() == []


def test_enum_members_and_tuples_are_sent_as_json_holds_them():
    class Colour(models.TextChoices):
        RED = "red"

    with airlock.scope(executor=django_tasks_executor):
        airlock.enqueue(tasks.record.using(backend="dummy"), "json", Colour.RED, (1, 2), status=HTTPStatus.OK)
    [result] = dummy_results()
    assert result.args == ["json", "red", [1, 2]] and type(result.args[1]) is str
    assert result.kwargs == {"status": 200} and type(result.kwargs["status"]) is int


def test_non_json_keyword_argument_is_named():
    with airlock.scope(executor=django_tasks_executor), pytest.raises(TypeError, match=r"kwargs\['order'\]"):
        airlock.enqueue(tasks.record, "bad", order=Order(sku="x"))


# -- a task's run is a scope (ImmediateBackend runs it in this process) -------------------


def test_successful_run_flushes_its_follow_ups_after_the_body():
    result = tasks.parent.using(backend="airlock_immediate").enqueue("ok")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value["children_stored_during_run"] == 0
    assert sorted(row.args_kwargs["args"][0] for row in stored(task_path=tasks.child.module_path)) == [
        "ok-airlock",
        "ok-plain",
    ]


def test_failed_run_discards_its_follow_ups():
    discarded = []
    signals.scope_discarded.connect(lambda sender, intents, error: discarded.append((intents, error)), weak=False)
    result = tasks.parent.using(backend="airlock_immediate").enqueue("fails", fail=True)
    assert result.status == TaskResultStatus.FAILED
    assert stored(task_path=tasks.child.module_path) == []
    [(intents, error)] = discarded
    assert [intent.name for intent in intents] == ["child", "child"]
    assert isinstance(error, RuntimeError)


def test_takes_context_task_runs_in_a_scope():
    result = tasks.with_context.using(backend="airlock_immediate").enqueue("ctx")
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value["attempt"] == 1
    assert result.return_value["children_stored_during_run"] == 0
    assert len(stored(task_path=tasks.child.module_path)) == 1


def test_a_run_inside_another_scope_hands_its_follow_ups_to_it():
    with airlock.scope(executor=django_tasks_executor) as outer:
        result = tasks.parent.using(backend="default").enqueue("nested")  # the bare ImmediateBackend
        assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
        assert stored() == [] and len(outer.captured_intents) == 2
    assert len(stored(task_path=tasks.child.module_path)) == 2


def test_configured_executor_wins_over_the_runs_default():
    sent = []
    airlock.configure(executor=lambda intent: sent.append(intent.name))
    tasks.parent.using(backend="airlock_immediate").enqueue("configured")
    assert sent == ["child", "child"]
    assert stored(task_path=tasks.child.module_path) == []


@pytest.mark.parametrize("name", ["decorated_parent", "decorated_with_context"])
def test_airlock_task_runs_in_its_own_scope(name):
    opened = []
    signals.scope_entered.connect(lambda scope: opened.append(scope), weak=False)
    result = getattr(tasks, name).using(backend="airlock_immediate").enqueue("deco")
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value["children_stored_during_run"] == 0
    assert len(opened) == 1, "the wrapper's scope, and no second one from task_started"
    assert stored(task_path=tasks.child.module_path) != []


def test_airlock_task_failure_discards():
    result = tasks.decorated_parent.using(backend="airlock_immediate").enqueue("deco-fails", fail=True)
    assert result.status == TaskResultStatus.FAILED
    assert stored(task_path=tasks.child.module_path) == []


@pytest.mark.parametrize("name", ["async_parent", "decorated_async_parent"])
@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails"])
def test_async_task_runs_are_scopes_too(name, fail):
    result = getattr(tasks, name).using(backend="airlock_immediate").enqueue(f"{name}-{fail}", fail=fail)
    assert result.status == (TaskResultStatus.FAILED if fail else TaskResultStatus.SUCCESSFUL), result.errors
    assert len(stored(task_path=tasks.child.module_path)) == (0 if fail else 1)


# -- AirlockBackend ---------------------------------------------------------------------


@pytest.fixture
def enqueued_signals():
    seen: list[TaskResult] = []

    def receiver(sender, task_result, **extra):
        seen.append(task_result)

    task_enqueued.connect(receiver)
    yield seen
    task_enqueued.disconnect(receiver)


def test_outside_any_scope_enqueue_goes_straight_through(enqueued_signals):
    result = tasks.record.enqueue("direct")
    assert not isinstance(result, AirlockTaskResult)
    [row] = stored()
    assert str(row.id) == result.id
    assert [seen.id for seen in enqueued_signals] == [result.id]


def test_inside_a_scope_enqueue_is_held_and_returns_a_handle(enqueued_signals):
    airlock.configure(executor=django_tasks_executor)
    with airlock.scope() as scope:
        handle = tasks.record.enqueue("held", 3)
        assert isinstance(handle, AirlockTaskResult) and isinstance(handle, TaskResult)
        assert handle.id and handle.status == TaskResultStatus.READY and handle.enqueued_at is None
        assert not handle.is_sent and handle.task_result is None
        handle.refresh()  # nothing stored yet: nothing changes
        assert handle.status == TaskResultStatus.READY
        assert task_backends["airlock_db"].get_result(handle.id) is handle
        assert [intent.task for intent in scope.intents] == [tasks.record]
        assert stored() == [] and enqueued_signals == []
    [row] = stored()
    assert handle.is_sent and handle.task_result.id == str(row.id) != handle.id
    assert handle.enqueued_at is not None
    assert [seen.id for seen in enqueued_signals] == [str(row.id)], "task_enqueued fires once, when it is stored"
    assert task_backends["airlock_db"].get_result(handle.id).id == str(row.id)
    row.status = TaskResultStatus.SUCCESSFUL
    row.save()
    handle.refresh()
    assert handle.status == TaskResultStatus.SUCCESSFUL


@pytest.mark.parametrize("alias", ["airlock_db", "airlock_immediate", "airlock_dummy"])
def test_discarded_scope_never_reaches_the_backend(alias, enqueued_signals):
    airlock.configure(executor=django_tasks_executor)
    with pytest.raises(Boom), airlock.scope():
        tasks.child.using(backend=alias).enqueue("discarded")
        raise Boom
    assert stored() == [] and Order.objects.count() == 0
    assert list(task_backends["airlock_dummy"].results) == []
    assert enqueued_signals == []


@pytest.mark.parametrize("alias", ["airlock_db", "airlock_immediate", "airlock_dummy"])
def test_flushed_scope_reaches_the_backend_once(alias, enqueued_signals):
    airlock.configure(executor=django_tasks_executor)
    with airlock.scope():
        handle = tasks.child.using(backend=alias).enqueue("flushed")
    assert handle.is_sent and len(enqueued_signals) == 1
    if alias == "airlock_db":
        assert len(stored()) == 1
    elif alias == "airlock_immediate":
        assert handle.status == TaskResultStatus.SUCCESSFUL and Order.objects.filter(sku="flushed").count() == 1
    else:
        assert [result.id for result in task_backends[alias].results] == [handle.task_result.id]


# The two ways in: a plain .enqueue() held by AirlockBackend, and airlock.enqueue()
# of a task on the bare DatabaseBackend through django_tasks_executor.
ENQUEUES = {
    "AirlockBackend": lambda label: tasks.record.enqueue(label),
    "executor": lambda label: airlock.enqueue(tasks.record.using(backend="db"), label),
}


@committing
@pytest.mark.parametrize("enqueue", ENQUEUES.values(), ids=ENQUEUES.keys())
def test_nothing_before_the_commit_and_nothing_after_a_rollback(enqueue, enqueued_signals):
    airlock.configure(scope_cls=DjangoScope, executor=django_tasks_executor)
    with transaction.atomic():
        with airlock.scope():
            enqueue("committed")
        assert stored() == []
    assert [row.args_kwargs["args"] for row in stored()] == [["committed"]]
    with pytest.raises(Boom), transaction.atomic():
        with airlock.scope():
            enqueue("rolled back")
        raise Boom
    assert len(stored()) == 1 and len(enqueued_signals) == 1


@committing
@pytest.mark.parametrize("enqueue", ENQUEUES.values(), ids=ENQUEUES.keys())
def test_a_commit_on_one_database_never_releases_a_task_bound_to_the_other(enqueue):
    airlock.configure(scope_cls=DjangoScope, executor=django_tasks_executor)
    with transaction.atomic(using="other"):
        with transaction.atomic(using="default"):
            with airlock.scope(using="other"):
                enqueue("bound to other")
        assert stored() == [], "the commit on 'default' must not release it"
    assert len(stored()) == 1


async def test_aenqueue_is_held_too():
    airlock.configure(executor=django_tasks_executor)
    async with airlock.scope() as scope:
        handle = await tasks.child.using(backend="airlock_dummy").aenqueue("async")
        assert isinstance(handle, AirlockTaskResult) and len(scope.intents) == 1
    assert handle.is_sent


@pytest.mark.parametrize("executor", [None, sync_executor], ids=["nothing-chosen", "sync-chosen"])
def test_held_tasks_reach_the_backend_whatever_executor_the_scope_has(executor):
    """The sync executor would run a Django Task in-process; AirlockBackend's go to the backend."""
    with airlock.scope(executor=executor) as scope:
        handle = tasks.child.enqueue("still queued")
        assert scope.intents and scope.executor_for(scope.intents[0]) is django_tasks_executor
    assert handle.is_sent and len(stored()) == 1
    assert not Order.objects.exists(), "queued, not run in this process"


def test_a_gating_policy_still_refuses_a_held_enqueue_on_the_spot():
    with airlock.scope(AssertNoEffects()) as scope, pytest.raises(PolicyViolation):
        tasks.child.enqueue("forbidden")
    assert scope.intents == [] and stored() == []


def test_bad_arguments_are_refused_by_the_held_enqueue():
    airlock.configure(executor=django_tasks_executor)
    with airlock.scope() as scope, pytest.raises(TypeError, match="datetime"):
        tasks.record.enqueue("bad", timezone.now())
    assert scope.intents == []


WRAPPER = "airlock.integrations.django_tasks.AirlockBackend"
DB = "django_tasks_db.DatabaseBackend"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, ["'WRAPS'", "OPTIONS"]),
        ({"OPTIONS": {"WRAPS": {"BACKEND": DB}, "WRAP": 1}}, ["'WRAP'", "did you mean 'WRAPS'"]),
        ({"OPTIONS": {"WRAPS": {}}}, ["'BACKEND'"]),
        ({"OPTIONS": {"WRAPS": {"BACKEND": DB, "QUEUE": ["a"]}}}, ["'QUEUE'", "did you mean 'QUEUES'"]),
        ({"OPTIONS": {"WRAPS": {"BACKEND": "nowhere.Backend"}}}, ["does not import", "nowhere.Backend"]),
        ({"OPTIONS": {"WRAPS": {"BACKEND": "airlock.Scope"}}}, ["not a django.tasks backend"]),
        ({"OPTIONS": {"WRAPS": {"BACKEND": WRAPPER}}}, ["real backend"]),
        ({"QUEUES": ["a"], "OPTIONS": {"WRAPS": {"BACKEND": DB}}}, ["move them", "['WRAPS']['QUEUES']"]),
    ],
    ids=[
        "no-wraps",
        "unknown-option",
        "no-backend",
        "unknown-entry-key",
        "unimportable",
        "not-a-backend",
        "wraps-itself",
        "queues-outside",
    ],
)
def test_misconfigured_wraps_fails_when_django_builds_the_backend(params, words):
    with pytest.raises(InvalidTaskBackend) as raised:
        AirlockBackend("broken", {"BACKEND": WRAPPER, **params})
    for word in ["settings.TASKS['broken']", *words]:
        assert word in str(raised.value)


def test_the_wrapper_is_also_the_real_backends_class():
    from django_tasks_db import DatabaseBackend

    backend = task_backends["airlock_db"]
    assert isinstance(backend, AirlockBackend) and isinstance(backend, DatabaseBackend)
    assert backend.queues == {"default", "emails"} and backend.supports_defer


# -- observability ------------------------------------------------------------------------


def test_dispatch_spans_say_django_tasks_and_carry_the_result_id():
    with instrumented() as otel:
        with airlock.scope(executor=django_tasks_executor):
            airlock.enqueue(tasks.child.using(backend="dummy"), "spanned")
        with airlock.scope():
            handle = tasks.child.using(backend="airlock_dummy").enqueue("held")
    sends = otel.named("send child")
    assert [span.attributes["messaging.system"] for span in sends] == ["django_tasks", "django_tasks"]
    [plain] = dummy_results()
    assert [span.attributes["messaging.message.id"] for span in sends] == [plain.id, handle.task_result.id]
    assert TRACE_KWARG not in plain.kwargs, "only airlock_task tasks take the trace keyword"


def test_airlock_task_gets_the_trace_keyword_and_never_sees_it():
    results = []
    signals.intent_dispatched.connect(lambda sender, intent, result: results.append(result), weak=False)
    with instrumented() as otel:
        with airlock.scope(executor=django_tasks_executor):
            airlock.enqueue(tasks.traced.using(backend="airlock_immediate"), "token")
    [result] = results
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors  # traced(token) takes no other keyword
    assert TRACE_KWARG in result.kwargs
    (send,) = otel.named("send traced")
    runs = [span for span in otel.spans if span.name == "airlock.scope" and span.parent is not None]
    assert [span.parent.span_id for span in runs] == [send.context.span_id], "the run's scope is inside the send"
