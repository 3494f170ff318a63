"""Django's TestCase never commits: the helpers make commit-bound intents visible and runnable."""

from __future__ import annotations

from django.db import transaction
from django.test import TestCase

import airlock
from airlock.integrations.django import DjangoScope
from airlock.integrations.django.testing import capture_on_commit, waiting_for_commit
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop import tasks

require_database()


class Stop(Exception):
    pass


class CommitBoundIntentsInTestCase(TestCase):
    def setUp(self) -> None:
        self.sent: list[object] = []
        airlock.configure(scope_cls=DjangoScope, executor=lambda intent: self.sent.append(intent.task(*intent.args)))

    def test_without_help_they_wait_for_a_commit_that_never_comes(self):
        response = self.client.get("/orders/", {"sku": "tea"})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(self.sent, [])
        [intent] = waiting_for_commit()
        self.assertEqual((intent.name, intent.args), ("send_confirmation", (int(response.content),)))

    def test_capture_on_commit_lists_them(self):
        with capture_on_commit() as intents:
            self.client.get("/orders/", {"sku": "tea"})
            self.client.get("/orders/", {"sku": "jam", "status": 400})
        self.assertEqual([intent.name for intent in intents], ["send_confirmation"])
        self.assertEqual(self.sent, [])

    def test_capture_on_commit_execute_sends_them_as_a_commit_would(self):
        with capture_on_commit(execute=True) as intents:
            self.client.get("/orders/", {"sku": "tea"})
        self.assertEqual(self.sent, ["tea"])
        self.assertEqual(len(intents), 1)
        self.assertEqual(waiting_for_commit(), [])

    def test_djangos_own_capture_runs_them_too(self):
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            self.client.get("/orders/", {"sku": "tea"})
            self.client.get("/orders/", {"sku": "jam"})
        self.assertEqual(self.sent, ["tea", "jam"])
        self.assertEqual(len(callbacks), 2)

    def test_a_rolled_back_savepoint_is_still_dropped(self):
        with capture_on_commit(execute=True) as intents, airlock.scope():
            with self.assertRaises(Stop), transaction.atomic():
                airlock.enqueue(tasks.notify_warehouse, 1)
                raise Stop
            airlock.enqueue(tasks.notify_warehouse, 2)
        self.assertEqual(self.sent, [2])
        self.assertEqual([intent.args for intent in intents], [(2,)])

    def test_a_commit_simulated_inside_the_scope_releases_at_the_scope_end(self):
        with airlock.scope():
            with self.captureOnCommitCallbacks(execute=True):
                airlock.enqueue(tasks.notify_warehouse, 3)
            self.assertEqual(self.sent, [])
        self.assertEqual(self.sent, [3])

    def test_a_scope_bound_to_an_alias_the_test_case_does_not_wrap_sends_at_flush(self):
        # This TestCase declares only "default", so "other" runs in autocommit.
        with capture_on_commit(using="default", execute=True) as intents, airlock.scope(using="other"):
            airlock.enqueue(tasks.notify_warehouse, 4)
        self.assertEqual(intents, [])
        self.assertEqual(self.sent, [4])  # nothing was open on "other": it went at flush
