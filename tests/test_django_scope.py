"""DjangoScope against real transactions: commit, rollback, savepoints, aliases, failures.

Runs on PostgreSQL (two databases on one server) and, with AIRLOCK_TEST_DB=sqlite, on SQLite.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest
from django.db import connections, transaction
from django.db.transaction import TransactionManagementError

import airlock
from airlock import BlockTasks, Scope, signals
from airlock.integrations.django import DjangoScope
from airlock.testing import capture
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop import tasks
from tests.djangoproject.shop.models import Order

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Boom(Exception):
    pass


class Recorder:
    """Executor that records task names; raises for tasks named ``boom``."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, intent: airlock.Intent) -> str:
        if intent.name == "boom":
            raise Boom(f"cannot send {intent}")
        self.sent.append(intent.name)
        return intent.name


def a() -> None: ...
def b() -> None: ...
def c() -> None: ...
def boom() -> None: ...


@pytest.fixture
def sent() -> list[str]:
    recorder = Recorder()
    airlock.configure(scope_cls=DjangoScope, executor=recorder)
    return recorder.sent


def test_intents_wait_for_the_commit(sent):
    with transaction.atomic():
        with airlock.scope() as scope:
            airlock.enqueue(a)
            airlock.enqueue(b)
        assert scope.is_flushed
        assert sent == []
    assert sent == ["a", "b"]


@pytest.mark.parametrize("scope_inside_atomic", [True, False], ids=["scope-inside-atomic", "atomic-inside-scope"])
def test_rollback_dispatches_nothing(sent, scope_inside_atomic):
    def work():
        Order.objects.create(sku="tea")
        airlock.enqueue(a)
        raise Boom

    if scope_inside_atomic:
        with pytest.raises(Boom), transaction.atomic(), airlock.scope():
            work()
    else:
        with airlock.scope() as scope:
            with pytest.raises(Boom), transaction.atomic():
                work()
        assert scope.is_flushed  # the scope itself ended normally: only the transaction failed
    assert sent == []
    assert not Order.objects.exists()


@pytest.mark.parametrize("flush_inside_transaction", [True, False], ids=["flush-before-commit", "flush-after-commit"])
def test_savepoint_rollback_drops_and_release_keeps(sent, flush_inside_transaction):
    def body():
        airlock.enqueue(a)
        with pytest.raises(Boom), transaction.atomic():
            assert connections["default"].savepoint_ids, "Django did not open a real savepoint"
            airlock.enqueue(boom)
            raise Boom
        with transaction.atomic():
            airlock.enqueue(b)
            with pytest.raises(Boom), transaction.atomic():  # rolled back inside a released one
                airlock.enqueue(boom)
                raise Boom
        airlock.enqueue(c)

    if flush_inside_transaction:
        with transaction.atomic():
            with airlock.scope():
                body()
            assert sent == []
    else:
        with airlock.scope():
            with transaction.atomic():
                body()
            assert sent == []
    assert sent == ["a", "b", "c"]


def test_released_savepoint_goes_nowhere_when_the_outer_transaction_rolls_back(sent):
    with airlock.scope():
        with pytest.raises(Boom), transaction.atomic():
            with transaction.atomic():
                airlock.enqueue(a)
            raise Boom
    assert sent == []


def test_outside_a_transaction_intents_go_at_flush(sent):
    """Autocommit: every write is already committed, so nothing waits; the scope's end is the moment."""
    with airlock.scope():
        order = Order.objects.create(sku="tea")
        airlock.enqueue(tasks.send_confirmation, order.pk)
        assert sent == []
    assert sent == ["send_confirmation"]


def test_commit_before_the_scope_ends_still_waits_for_the_scope(sent):
    with airlock.scope():
        with transaction.atomic():
            airlock.enqueue(a)
        assert sent == []  # committed, but the scope decides when
    assert sent == ["a"]


def test_committed_intents_are_dropped_when_the_scope_discards(sent):
    with pytest.raises(Boom), airlock.scope():
        with transaction.atomic():
            airlock.enqueue(a)
        raise Boom
    assert sent == []


def test_a_commit_on_one_alias_never_releases_intents_bound_to_another(sent):
    with transaction.atomic(using="other"):
        with transaction.atomic(using="default"):
            with airlock.scope(using="other"):
                order = Order.objects.using("other").create(sku="other-tea")
                airlock.enqueue(tasks.send_confirmation, order.pk, using="other")
        assert sent == []  # "default" committed; the intent waits for "other"
    assert sent == ["send_confirmation"]
    assert Order.objects.using("other").filter(pk=order.pk).exists()


def test_a_rollback_on_the_bound_alias_drops_even_if_another_commits(sent):
    with airlock.scope(using="other"):
        with transaction.atomic(using="default"):
            with pytest.raises(Boom), transaction.atomic(using="other"):
                airlock.enqueue(a)
                raise Boom
    assert sent == []


def test_a_transaction_on_another_alias_is_not_waited_for(sent):
    """Bound to "default", the scope ignores an open transaction on "other"."""
    with transaction.atomic(using="other"):
        with airlock.scope():
            airlock.enqueue(a)
        assert sent == ["a"]


def test_captured_intents_keep_their_own_alias(sent):
    with transaction.atomic(using="other"), airlock.scope() as outer:
        with airlock.scope(using="other"):
            airlock.enqueue(a)
        assert outer.intents[0].name == "a"
    # "default" had no transaction: the outer scope releases at its flush the
    # intents whose transaction ("other") already committed.
    assert sent == ["a"]


def test_nested_scopes_keep_what_the_savepoint_decided(sent):
    with airlock.scope(), transaction.atomic():
        with airlock.scope():
            with pytest.raises(Boom), transaction.atomic():
                airlock.enqueue(boom)
                raise Boom
            airlock.enqueue(a)
    assert sent == ["a"]


def test_intents_from_a_plain_inner_scope_wait_for_the_commit_open_at_flush(sent):
    with transaction.atomic():
        with airlock.scope():
            with airlock.scope(_cls=Scope):
                airlock.enqueue(a)
        assert sent == []
    assert sent == ["a"]


@contextlib.contextmanager
def _atomic_around_the_scope() -> Iterator[None]:
    with transaction.atomic(), airlock.scope():
        yield


@contextlib.contextmanager
def _atomic_inside_the_scope() -> Iterator[None]:
    # The transaction commits before the scope flushes: the flush releases at once, after a real commit.
    with airlock.scope(), transaction.atomic():
        yield


@contextlib.contextmanager
def _no_transaction() -> Iterator[None]:
    with airlock.scope():
        yield


@contextlib.contextmanager
def _plain_scope_captured_without_a_transaction() -> Iterator[None]:
    with airlock.scope(), airlock.scope(_cls=Scope):
        yield


@pytest.mark.parametrize(
    ("unit_of_work", "moment"),
    [
        (_atomic_around_the_scope, "after commit on database 'default'"),
        (_atomic_inside_the_scope, "after commit on database 'default'"),
        (_no_transaction, "at flush, with no transaction open on database 'default'"),
        (_plain_scope_captured_without_a_transaction, "at flush, with no transaction open on database 'default'"),
    ],
    ids=["after-commit", "committed-before-flush", "autocommit", "captured-in-autocommit"],
)
def test_one_failure_never_stops_the_others_and_is_reported_and_logged(sent, caplog, unit_of_work, moment):
    """The log says when the intent went: after a commit only when there was one."""
    failures = []

    def on_failure(scope, intent, error):
        failures.append((intent.name, type(error)))

    signals.dispatch_failed.connect(on_failure, weak=False)
    with caplog.at_level(logging.ERROR, logger="airlock.integrations.django"):
        with unit_of_work():
            airlock.enqueue(a)
            airlock.enqueue(boom)
            airlock.enqueue(b)
    assert sent == ["a", "b"]
    assert failures == [("boom", Boom)]
    [record] = [r for r in caplog.records if r.name == "airlock.integrations.django"]
    message = record.getMessage()
    assert "boom()" in message and record.exc_info[0] is Boom
    assert f"failed to dispatch {moment};" in message
    if "no transaction" in moment:
        assert "commit" not in message


def test_many_intents_go_in_enqueue_order(sent):
    names = [a, b, c] * 50
    with transaction.atomic(), airlock.scope():
        for task in names:
            airlock.enqueue(task)
    assert sent == [task.__name__ for task in names]


def test_policy_drops_before_commit(sent):
    with transaction.atomic(), airlock.scope(BlockTasks({"b"})) as scope:
        airlock.enqueue(a)
        airlock.enqueue(b)
    assert sent == ["a"]
    assert scope.is_flushed


def test_scope_flushed_is_sent_at_schedule_and_dispatched_after_commit(sent):
    with capture(dispatch=True) as captured:
        with transaction.atomic():
            with airlock.scope():
                airlock.enqueue(a)
            assert "scope_flushed" in captured.names and captured.dispatched == []
    assert captured.names[-2:] == ["intent_released", "intent_dispatched"]
    assert [intent.name for intent in captured.dispatched] == ["a"]


def test_manual_transaction_management_refuses_the_enqueue(sent):
    connection = connections["default"]
    connection.set_autocommit(False)
    try:
        with airlock.scope() as scope:
            with pytest.raises(TransactionManagementError):
                airlock.enqueue(a)
        assert scope.intents == []
    finally:
        connection.rollback()
        connection.set_autocommit(True)
    assert sent == []


def test_using_an_unknown_alias_is_refused():
    with pytest.raises(ValueError, match=r"using='nope'.*'default', 'other'"):
        DjangoScope(using="nope")


class ToOther:
    def db_for_write(self, model, **hints):
        return "other"


def test_default_alias_follows_the_router(settings):
    assert DjangoScope().using == "default"
    settings.DATABASE_ROUTERS = [f"{__name__}.ToOther"]
    assert DjangoScope().using == "other"
