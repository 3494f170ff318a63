"""The pytest plugin's outbox helper: drains what the relay would deliver, fails when stuck."""

from __future__ import annotations

import pytest
from django.db import transaction

import airlock
from airlock.integrations.django.outbox import OutboxScope, OutboxStuck, configure_outbox, drain_outbox
from airlock.integrations.executors.celery import celery_executor
from tests.djangoproject.checks import require_database
from tests.outbox_support import make_app, memory_messages, memory_record, states

require_database()

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture(autouse=True)
def outbox():
    configure_outbox({"FAST_PATH": False})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    memory_messages()
    yield
    configure_outbox(None)


def commit(*values, task=memory_record):
    with airlock.scope(), transaction.atomic():
        for value in values:
            airlock.enqueue(task, value)


def test_the_fixture_drains_every_committed_row_in_order(airlock_drain_outbox):
    commit(1, 2, 3)
    assert memory_messages() == [] and states() == ["ready"] * 3
    done = airlock_drain_outbox()
    assert done.sent == 3
    assert [args for _, args, _ in memory_messages()] == [[1], [2], [3]]
    assert states() == ["sent"] * 3
    assert airlock_drain_outbox().sent == 0, "nothing left: a second drain is a no-op"


def test_a_drain_that_makes_no_progress_fails_naming_the_rows():
    _app, lost = make_app("airlock_drain_lost", "memory://")
    commit(1, task=lost)
    lost.app.tasks.unregister(lost.name)  # the relay cannot resolve it any more
    with pytest.raises(
        OutboxStuck,
        match=r"made no progress: this process cannot resolve the celery task 'airlock_drain_lost\.record' "
        r"\(add \"airlock_drain_lost\" to CELERY_IMPORTS.*\); 1 row\(s\) still wait.*attempts 0\)",
    ):
        drain_outbox()
