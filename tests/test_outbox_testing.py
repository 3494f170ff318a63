"""Testing with the outbox on: the test databases go cleanly, and the helpers see what the outbox holds.

- The connections the outbox opens beside Django's (the mark line, the
  background publisher's, the writer lock's) are closed right before a test database is dropped,
  under pytest-django and under ``manage.py test``: proven in a test session of
  its own, on PostgreSQL, whose database must be gone afterwards.
- ``drain_outbox()`` reports what the fast path delivered, whatever ``FAST_PATH`` is.
- ``airlock_capture`` and ``airlock_eager`` see (and run) what the outbox holds,
  whatever ``FAST_PATH`` is.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction

import airlock
from airlock.integrations.django.outbox import (
    OutboxScope,
    _own_connections,
    background_publisher,
    configure_outbox,
    drain_outbox,
)
from airlock.integrations.executors.celery import celery_executor
from tests.djangoproject.checks import require_database
from tests.outbox_support import memory_app, memory_messages, states

require_database()

FAST_PATHS = ["background", "inline", "off"]

# -- the test databases' teardown ---------------------------------------------------------

SESSION_SETTINGS = """
import json
import os

SECRET_KEY = "teardown-test"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": json.loads(os.environ["TEARDOWN_DATABASE"])}
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "airlock.integrations.django"]
AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.celery.celery_executor",
    "OUTBOX": {"FAST_PATH": "background", "MARK_LINE": True},
}
"""

SESSION_TASKS = """
from celery import Celery

app = Celery("teardown", broker="memory://", set_as_current=False)


@app.task(name="teardown.record", shared=False)
def record(value):
    return value
"""

# What the session does: commit an intent through the outbox, and check that the
# publisher and the mark line really hold connections of their own (else the
# teardown below would prove nothing).
SESSION_COMMIT = """
import airlock
from django.contrib.auth.models import Group
from django.db import connection, transaction

from airlock.integrations.django.outbox import OutboxMessage, background_publisher
from airlock.integrations.django.outbox._markline import APPLICATION_NAME
from tasks import record


def commit_and_check_own_connections():
    with airlock.scope(), transaction.atomic():
        Group.objects.create(name="tea")
        airlock.enqueue(record, 1)
    publisher = background_publisher()
    assert publisher is not None and publisher.drain(10) and publisher.published == 1
    assert list(OutboxMessage.objects.values_list("state", flat=True)) == ["sent"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        others = sorted(name for (name,) in cursor.fetchall())
    assert APPLICATION_NAME in others and len(others) >= 2, others  # the mark line, and the publisher's
"""

SESSION_PYTEST = """
import pytest

from session_commit import commit_and_check_own_connections


@pytest.mark.django_db(transaction=True)
def test_commit_through_the_outbox():
    commit_and_check_own_connections()
"""

SESSION_DJANGO = """
from django.test import TransactionTestCase

from session_commit import commit_and_check_own_connections


class CommitTests(TransactionTestCase):
    def test_commit_through_the_outbox(self):
        commit_and_check_own_connections()
"""

SESSION_INI = """
[pytest]
addopts = -p no:cacheprovider
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""

LEFT_BEHIND = "is being accessed by other users"


def _postgres() -> dict[str, str]:
    if settings.ENGINE != "postgres":
        pytest.skip("the test database's teardown is proven on PostgreSQL (AIRLOCK_TEST_DB=sqlite runs without it)")
    source = settings.DATABASES["default"]
    return {key: source[key] for key in ("ENGINE", "HOST", "PORT", "USER", "PASSWORD")}


def _databases_named(server: dict[str, str], name: str) -> list[str]:
    """The databases of that name on the server (none, or the one a session left behind, now dropped)."""
    import psycopg

    with psycopg.connect(
        host=server["HOST"],
        port=server["PORT"],
        user=server["USER"],
        password=server["PASSWORD"],
        dbname="postgres",
        autocommit=True,  # DROP DATABASE runs outside a transaction
    ) as connection:
        found = connection.execute("SELECT datname FROM pg_database WHERE datname = %s", [name]).fetchall()
        for (left,) in found:  # clean up after a failed run: this test's database only
            connection.execute(f'DROP DATABASE IF EXISTS "{left}" WITH (FORCE)')
    return [left for (left,) in found]


@pytest.mark.parametrize("runner", ["pytest-django", "manage.py test"])
def test_the_test_database_is_dropped_without_waiting_for_the_outboxs_connections(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, runner: str
) -> None:
    """The mark line and the publisher's connection close before the drop: no warning, no database left."""
    server = _postgres()
    name = f"airlock_teardown_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TEARDOWN_DATABASE", json.dumps({**server, "NAME": "postgres", "TEST": {"NAME": name}}))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "session_settings")
    pytester.makepyfile(session_settings=SESSION_SETTINGS, tasks=SESSION_TASKS, session_commit=SESSION_COMMIT)
    started = time.monotonic()
    try:
        if runner == "pytest-django":
            pytester.makeini(SESSION_INI)
            pytester.makepyfile(test_session=SESSION_PYTEST)
            result = pytester.runpytest_subprocess("-p", "pytest_django", "-rA")
            passed = result.parseoutcomes().get("passed") == 1 and result.ret == 0
        else:
            pytester.makepyfile(session_tests=SESSION_DJANGO)
            result = pytester.run(sys.executable, "-W", "error", "-m", "django", "test", "session_tests", "-v", "2")
            passed = result.ret == 0 and "OK" in result.errlines
    finally:
        left = _databases_named(server, name)
    seconds = time.monotonic() - started
    output = "\n".join(result.outlines + result.errlines)
    print(f"{runner}: the session took {seconds:.2f}s")  # a measure for the report, not a check
    assert passed, output
    assert LEFT_BEHIND not in output
    assert left == [], "the test database was left behind"


def test_every_own_connection_is_closed_even_when_one_closer_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One connection that cannot be closed must not keep the others open (each would stop the drop)."""
    monkeypatch.setattr(_own_connections, "close_before_teardown", lambda alias, close: None)
    closed: list[str] = []

    def broken() -> None:
        raise RuntimeError("this closer fails")

    _own_connections.track("airlock-unit", broken)
    _own_connections.track("airlock-unit", lambda: closed.append("second"))
    _own_connections.close_own_connections("airlock-unit")
    assert closed == ["second"]
    assert "this closer fails" in caplog.text
    _own_connections.close_own_connections("airlock-unit")
    assert closed == ["second"], "closed once: the closers are forgotten"


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_the_publisher_reopens_its_connection_after_a_teardown_closed_it() -> None:
    """The publisher's thread closes its connection when asked, and its next batch opens a new one."""
    configure_outbox({"FAST_PATH": "background"})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    try:
        commit(1)
        publisher = background_publisher()
        assert publisher is not None and publisher.drain(10)
        before = publisher.published
        publisher.close_connection("default", 10)
        commit(2)
        assert publisher.drain(10)
        assert publisher.published == before + 1
        assert states() == ["sent", "sent"]
    finally:
        configure_outbox(None)
    memory_messages()


# -- the drain, capture and eager, whatever FAST_PATH is ---------------------------------


@pytest.fixture(params=FAST_PATHS)
def fast_path(request: pytest.FixtureRequest) -> Iterator[str]:
    configure_outbox({"FAST_PATH": request.param})
    airlock.configure(scope_cls=OutboxScope, executor=celery_executor)
    memory_messages()
    RAN.clear()
    yield request.param
    configure_outbox(None)


RAN: list[int] = []


@memory_app.task(name="outbox_memory.remember", shared=False)
def remember(value: int) -> None:
    RAN.append(value)


def commit(*values: int, task: Any = remember) -> None:
    with airlock.scope(), transaction.atomic():
        for value in values:
            airlock.enqueue(task, value)


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_the_drain_reports_what_the_fast_path_or_the_relay_delivered(fast_path: str, airlock_drain_outbox) -> None:
    """``airlock_drain_outbox().sent`` counts the test's deliveries, whoever made them (the publisher waited for)."""
    commit(1, 2)
    commit(3)
    done = airlock_drain_outbox()
    assert done.sent == 3
    assert states() == ["sent"] * 3
    assert sorted(args for _, args, _ in memory_messages()) == [[1], [2], [3]]
    assert airlock_drain_outbox().sent == 0, "a second drain has nothing more to report"


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_a_drain_outside_the_fixture_counts_from_the_previous_drain(fast_path: str) -> None:
    drain_outbox()
    commit(1)
    assert drain_outbox().sent == 1
    commit(2, 3)
    assert drain_outbox().sent == 2
    assert states() == ["sent"] * 3


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_airlock_capture_sees_what_the_outbox_holds_and_runs_it(fast_path: str, airlock_capture) -> None:
    """With any fast path (``"off"`` too), the committed intents are captured, and ``run()`` runs them."""
    commit(1, 2)
    assert [intent.args for intent in airlock_capture.dispatched] == [(1,), (2,)]
    assert [intent.args for intent in airlock_capture.run()] == [(1,), (2,)]
    assert RAN == [1, 2]
    assert states() == ["sent"] * 2, "taken by the capture: no relay sends them again"
    assert memory_messages() == [], "captured, not published"


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_airlock_eager_runs_what_the_outbox_holds(fast_path: str, airlock_eager) -> None:
    """With any fast path (``"off"`` too), each committed intent runs here at once."""
    commit(1, 2)
    assert RAN == [1, 2]
    assert [intent.args for intent in airlock_eager.dispatched] == [(1,), (2,)]
    assert states() == ["sent"] * 2
    assert memory_messages() == [], "run here, not published"
