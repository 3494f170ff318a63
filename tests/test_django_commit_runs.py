"""DjangoScope registers one on_commit callback per run of intents, not one per intent.

A run is what a scope enqueues while the same transaction and savepoints are open. Django
pops its callbacks off the front of a list at commit, so a callback per intent made a
commit quadratic; these tests prove the structure (how many callbacks Django holds) and
that savepoint rollbacks, order, captures and the testing helpers stay exact with it.
"""

from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.test import TestCase

import airlock
from airlock import signals
from airlock.integrations.django import DjangoScope, TransactionRolledBack
from airlock.integrations.django.testing import capture_on_commit, waiting_for_commit
from tests.djangoproject.checks import require_database

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Undo(Exception):
    pass


def note(n: int) -> None: ...


@pytest.fixture
def sent() -> list[int]:
    out: list[int] = []
    airlock.configure(scope_cls=DjangoScope, executor=lambda intent: out.append(intent.args[0]))
    return out


def callbacks(using: str = "default") -> int:
    return len(connections[using].run_on_commit)


def test_a_thousand_intents_in_one_transaction_are_one_callback(sent):
    with transaction.atomic():
        with airlock.scope():
            for n in range(1000):
                airlock.enqueue(note, n)
        assert callbacks() == 1
        assert sent == []
    assert sent == list(range(1000))


def test_one_callback_per_savepoint(sent):
    with transaction.atomic():
        with airlock.scope():
            for n in range(10):
                airlock.enqueue(note, n)
            for block in range(3):
                with transaction.atomic():
                    for n in range(10):
                        airlock.enqueue(note, 100 * (block + 1) + n)
        assert callbacks() == 4
    assert sent == list(range(10)) + [100 * b + n for b in (1, 2, 3) for n in range(10)]


def test_leaving_a_savepoint_starts_a_new_run_so_commit_keeps_enqueue_order(sent):
    with transaction.atomic():
        with airlock.scope():
            airlock.enqueue(note, 1)
            with transaction.atomic():
                airlock.enqueue(note, 2)
            airlock.enqueue(note, 3)
            with transaction.atomic():
                airlock.enqueue(note, 4)
            airlock.enqueue(note, 5)
        assert callbacks() == 5
    assert sent == [1, 2, 3, 4, 5]


def test_a_savepoint_rolled_back_elsewhere_keeps_the_run_it_interrupted(sent):
    with transaction.atomic():
        with airlock.scope():
            airlock.enqueue(note, 1)
            with pytest.raises(Undo), transaction.atomic():
                raise Undo  # Django rebuilds its list of callbacks, without dropping ours
            airlock.enqueue(note, 2)
        assert callbacks() == 1
    assert sent == [1, 2]


def test_a_rolled_back_run_is_dropped_whole_and_reported_and_the_rest_goes(sent):
    dropped: list[tuple[int, object]] = []

    def on_drop(scope, intent, policy):
        dropped.append((intent.args[0], policy))

    with signals.intent_dropped.connected_to(on_drop), transaction.atomic():
        with airlock.scope() as scope:
            airlock.enqueue(note, 1)
            with pytest.raises(Undo), transaction.atomic():
                for n in (10, 11, 12):
                    airlock.enqueue(note, n)
                raise Undo
            airlock.enqueue(note, 2)
        assert [intent.args[0] for intent in scope.intents] == [1, 10, 11, 12, 2]
        assert callbacks() == 2
    assert sent == [1, 2]
    assert [n for n, _ in dropped] == [10, 11, 12]
    assert all(type(policy) is TransactionRolledBack for _, policy in dropped)


def test_a_run_called_without_a_commit_is_not_reused(sent):
    # captureOnCommitCallbacks(execute=True) calls the callback and leaves it registered:
    # what comes after must still wait for the real commit.
    with transaction.atomic():
        with airlock.scope():
            with TestCase.captureOnCommitCallbacks(execute=True):
                airlock.enqueue(note, 1)
            airlock.enqueue(note, 2)
        assert sent == [1]
    assert sent == [1, 2]


def test_a_captured_child_run_keeps_its_place_between_the_parents_runs(sent):
    with transaction.atomic():
        with airlock.scope():
            airlock.enqueue(note, 1)
            with airlock.scope():
                airlock.enqueue(note, 2)
                airlock.enqueue(note, 3)
            airlock.enqueue(note, 4)
        assert callbacks() == 3
    assert sent == [1, 2, 3, 4]


class SendsOddNow(DjangoScope):
    """An ancestor that lets a child's odd-numbered intents go now and captures the rest."""

    def before_descendant_flushes(self, exiting_scope, intents):
        return [intent for intent in intents if intent.args[0] % 2]


def test_a_run_split_between_a_child_and_its_ancestor_sends_each_intent_once(sent):
    with transaction.atomic():
        with SendsOddNow(executor=lambda intent: sent.append(intent.args[0])):
            with airlock.scope() as child:
                for n in range(1, 7):
                    airlock.enqueue(note, n)
            assert child.is_flushed
            assert callbacks() == 1
        assert sent == []
    # One callback, two scopes' parts: the child's, then what the ancestor captured.
    assert sent == [1, 3, 5, 2, 4, 6]


def skip(n: int) -> None: ...


def test_a_policy_refusal_inside_a_run_sends_only_the_rest(sent):
    with transaction.atomic():
        with airlock.scope(airlock.BlockTasks([skip])):
            airlock.enqueue(note, 1)
            airlock.enqueue(skip, 2)
            airlock.enqueue(note, 3)
        assert callbacks() == 1
    assert sent == [1, 3]


def test_intents_committed_before_the_flush_go_at_flush_in_enqueue_order(sent):
    with airlock.scope():
        airlock.enqueue(note, 1)  # autocommit
        with transaction.atomic():
            airlock.enqueue(note, 2)
        airlock.enqueue(note, 3)
        with transaction.atomic():
            airlock.enqueue(note, 4)
        with transaction.atomic(using="other"):
            airlock.enqueue(note, 5)  # the scope waits on "default" only
        assert sent == []
    assert sent == [1, 2, 3, 4, 5]


def test_each_alias_gets_its_own_callback(sent):
    with transaction.atomic(), transaction.atomic(using="other"):
        with airlock.scope():
            airlock.enqueue(note, 1)
            with airlock.scope(using="other"):
                airlock.enqueue(note, 2)
                airlock.enqueue(note, 3)
            airlock.enqueue(note, 4)
        assert (callbacks("default"), callbacks("other")) == (2, 1)
    assert sent == [2, 3, 1, 4]  # "other" (the inner block) commits first


def test_the_testing_helpers_list_every_intent_of_a_run(sent):
    with transaction.atomic():
        with capture_on_commit() as captured, airlock.scope():
            for n in range(5):
                airlock.enqueue(note, n)
        assert [intent.args[0] for intent in captured] == [0, 1, 2, 3, 4]
        assert [intent.args[0] for intent in waiting_for_commit()] == [0, 1, 2, 3, 4]
    assert sent == [0, 1, 2, 3, 4]
    assert waiting_for_commit() == []
