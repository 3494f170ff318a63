"""airlock's pytest plugin, run the way users run it: in a pytest of its own (pytester).

Each test writes a small project and runs pytest on it in a subprocess, with
``--strict-markers`` and warnings as errors, so the plugin is loaded through its
``pytest11`` entry point exactly as after ``pip install airlock-dispatch``.
"""

from __future__ import annotations

import ast
import textwrap

import pytest

INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""

TASKS = """
import airlock

ran = []


def send_email(order_id, *, template="receipt"):
    ran.append(("send_email", order_id, template))


@airlock.scoped()  # a task-run scope, as on a worker: its follow-ups go when it succeeds
def charge(order_id):
    ran.append(("charge", order_id))
    airlock.enqueue(send_email, order_id, template="paid")


def place_order(order_id):
    with airlock.scope():
        airlock.enqueue(charge, order_id)
"""

PLAIN = """
import pytest

import airlock
from tasks import charge, place_order, ran, send_email


@pytest.fixture(autouse=True)
def _empty(request):
    ran.clear()
    yield
    with open("ran.log", "a") as log:  # what each test's tasks did, for the outer test to read
        log.write(f"{request.node.name} {ran!r}\\n")


def test_capture_records_intents_and_events_and_runs_nothing(airlock_capture):
    place_order(7)
    assert [str(i) for i in airlock_capture.enqueued] == ["charge(7)"]
    assert airlock_capture.names[:2] == ["scope_entered", "intent_enqueued"]
    assert ran == []


def test_assert_enqueued_returns_the_matching_intent(airlock_capture):
    place_order(7)
    assert airlock_capture.assert_enqueued("charge", args=(7,)).task is charge
    airlock_capture.assert_enqueued("charge")


def test_assert_enqueued_wrong_argument(airlock_capture):
    place_order(7)
    airlock_capture.assert_enqueued("charge", args=[8])


def test_assert_enqueued_wrong_kwargs(airlock_capture):
    with airlock.scope():
        airlock.enqueue(send_email, 7, template="welcome")
    airlock_capture.assert_enqueued("send_email", kwargs={"template": "receipt"})


def test_assert_enqueued_nothing(airlock_capture):
    airlock_capture.assert_enqueued("charge")


def test_run_runs_what_went_out_then_its_follow_ups(airlock_capture):
    place_order(7)
    assert ran == []
    assert [str(i) for i in airlock_capture.run()] == ["charge(7)", "send_email(7, template='paid')"]
    assert ran == [("charge", 7), ("send_email", 7, "paid")]
    assert airlock_capture.run() == []  # each intent runs once


def test_run_skips_what_was_discarded(airlock_capture):
    try:
        with airlock.scope():
            airlock.enqueue(charge, 1)
            raise ValueError("payment declined")
    except ValueError:
        pass
    assert airlock_capture.run() == []
    assert ran == []
    assert [str(i) for i in airlock_capture.run(airlock_capture.enqueued)] == ["charge(1)"]


def test_eager_runs_every_intent_at_the_flush(airlock_eager):
    airlock.configure(executor=lambda intent: pytest.fail("the configured executor must not run"))
    try:
        place_order(7)
    finally:
        airlock.reset_configuration()
    assert ran == [("charge", 7), ("send_email", 7, "paid")]
    assert [i.name for i in airlock_eager.dispatched] == ["send_email", "charge"]


@pytest.mark.airlock_no_enqueue
def test_marker_passes_when_nothing_is_enqueued():
    with airlock.scope():
        pass


@pytest.mark.airlock_no_enqueue
def test_marker_fails_and_names_each_intent():
    place_order(7)
    with airlock.scope(airlock.DropAll()):
        airlock.enqueue(send_email, 8)


@pytest.mark.airlock_no_enqueue
def test_marker_leaves_the_tests_own_failure_alone():
    place_order(7)
    assert False, "the test's own failure"


def test_unmarked_tests_are_unchanged():
    place_order(7)
    assert ran == [("charge", 7), ("send_email", 7, "paid")]
"""


def _ran(pytester: pytest.Pytester) -> dict[str, list[tuple[object, ...]]]:
    """What each test of the inner session ran (its tasks' side effects), by test name."""
    lines = (pytester.path / "ran.log").read_text().splitlines()
    return {name: ast.literal_eval(ran) for name, ran in (line.split(" ", 1) for line in lines)}


def _project(pytester: pytest.Pytester, **files: str) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(tasks=TASKS, **{name: textwrap.dedent(body) for name, body in files.items()})


def test_plain_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pytest-django: fixtures, run(), eager, the marker and assert_enqueued's message."""
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    _project(pytester, test_plain=PLAIN)
    result = pytester.runpytest_subprocess("-p", "no:django", "-rA")
    result.assert_outcomes(passed=7, failed=5)
    failed = {line.split("::")[1].split()[0] for line in result.outlines if line.startswith("FAILED")}
    assert failed == {
        "test_assert_enqueued_wrong_argument",
        "test_assert_enqueued_wrong_kwargs",
        "test_assert_enqueued_nothing",
        "test_marker_fails_and_names_each_intent",
        "test_marker_leaves_the_tests_own_failure_alone",
    }
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: expected charge(8) with any keyword arguments to be enqueued; what was enqueued:",
            "E*  - charge(7)",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E*expected send_email(template='receipt') with any positional arguments to be enqueued; "
            "what was enqueued:",
            "E*  - send_email(7, template='welcome')",
        ]
    )
    result.stdout.fnmatch_lines(["E*expected charge to be enqueued, but nothing was enqueued"])
    result.stdout.fnmatch_lines(
        [
            "test_marker_fails_and_names_each_intent is marked airlock_no_enqueue, but it enqueued 2 intent(s), "
            "stopped before they were dispatched:",
            "  - charge(7)",  # stopped: so charge never ran, and never enqueued its follow-up
            "  - send_email(8)",
        ]
    )
    result.stdout.fnmatch_lines(["E*AssertionError: the test's own failure*"])
    assert "marked airlock_no_enqueue, but it enqueued 1" not in result.stdout.str()
    ran = _ran(pytester)
    assert ran["test_marker_fails_and_names_each_intent"] == []
    assert ran["test_marker_leaves_the_tests_own_failure_alone"] == []
    assert ran["test_unmarked_tests_are_unchanged"] == [("charge", 7), ("send_email", 7, "paid")]


SETTINGS = """
SECRET_KEY = "plugin-test"
USE_TZ = True
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "airlock.integrations.django"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

DJANGO = """
import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import TestCase

import airlock
from airlock.integrations.django import DjangoScope
from tasks import place_order, ran


def create_group(name):
    with airlock.scope() as scope, transaction.atomic():
        Group.objects.create(name=name)
        place_order(name)
    assert isinstance(scope, DjangoScope)


@pytest.fixture(autouse=True)
def _empty(request):
    ran.clear()
    yield
    with open("ran.log", "a") as log:  # what each test's tasks did, for the outer test to read
        log.write(f"{request.node.name} {ran!r}\\n")


@pytest.mark.django_db
def test_pytest_django_db_enqueued_but_waiting_for_commit(airlock_capture):
    create_group("tea")
    airlock_capture.assert_enqueued("charge", args=("tea",))
    assert airlock_capture.dispatched == []  # the test's transaction never commits


@pytest.mark.django_db
def test_pytest_django_commit_callbacks_then_run(airlock_capture, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        create_group("tea")
    assert [str(i) for i in airlock_capture.run()] == ["charge('tea')", "send_email('tea', template='paid')"]
    assert ran == [("charge", "tea"), ("send_email", "tea", "paid")]


@pytest.mark.django_db(transaction=True)
def test_pytest_django_transactional_eager(airlock_eager):
    create_group("tea")
    assert ran == [("charge", "tea"), ("send_email", "tea", "paid")]


@pytest.mark.django_db
@pytest.mark.airlock_no_enqueue
def test_pytest_django_marker_fails():
    create_group("tea")


@pytest.mark.django_db(transaction=True)
@pytest.mark.airlock_no_enqueue
def test_pytest_django_marker_stops_a_committed_intent():
    create_group("tea")


class CheckoutTests(TestCase):
    @pytest.fixture(autouse=True)
    def _capture(self, airlock_capture):
        self.captured = airlock_capture

    def test_assert_enqueued_inside_testcase(self):
        create_group("tea")
        self.captured.assert_enqueued("charge", args=("tea",))

    def test_assert_enqueued_message_inside_testcase(self):
        create_group("tea")
        self.captured.assert_enqueued("refund")

    def test_capture_on_commit_then_run(self):
        from airlock.integrations.django.testing import capture_on_commit

        with capture_on_commit(execute=True) as intents:
            create_group("tea")
        assert [i.name for i in intents] == ["charge"]
        self.captured.run()
        assert ran == [("charge", "tea"), ("send_email", "tea", "paid")]

    @pytest.mark.airlock_no_enqueue
    def test_marker_fails_inside_testcase(self):
        create_group("tea")

    @pytest.mark.airlock_no_enqueue
    def test_marker_passes_inside_testcase(self):
        Group.objects.create(name="quiet")
"""


def test_pytest_django_and_django_testcase(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """With pytest-django: django_db tests, and fixtures and the marker inside Django's TestCase."""
    pytest.importorskip("pytest_django")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "plugin_settings")
    _project(pytester, plugin_settings=SETTINGS, test_django=DJANGO)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-p", "pytest_django", "-rA")
    result.assert_outcomes(passed=6, failed=4)
    failed = {line.split("::")[-1].split()[0] for line in result.outlines if line.startswith("FAILED")}
    assert failed == {
        "test_pytest_django_marker_fails",
        "test_pytest_django_marker_stops_a_committed_intent",
        "test_assert_enqueued_message_inside_testcase",
        "test_marker_fails_inside_testcase",
    }
    result.stdout.fnmatch_lines(["E*expected refund to be enqueued; what was enqueued:", "E*  - charge('tea')"])
    result.stdout.fnmatch_lines(
        ["test_marker_fails_inside_testcase is marked airlock_no_enqueue, but it enqueued 1 intent(s), *"]
    )
    result.stdout.fnmatch_lines(
        ["test_pytest_django_marker_fails is marked airlock_no_enqueue, but it enqueued 1 intent(s), *"]
    )
    result.stdout.fnmatch_lines(
        [
            "test_pytest_django_marker_stops_a_committed_intent is marked airlock_no_enqueue, "
            "but it enqueued 1 intent(s), stopped before they were dispatched:",
            "  - charge('tea')",
        ]
    )
    ran = _ran(pytester)
    assert ran["test_pytest_django_marker_stops_a_committed_intent"] == [], "committed, but stopped: charge never ran"
    assert ran["test_pytest_django_transactional_eager"] == [("charge", "tea"), ("send_email", "tea", "paid")]


def test_the_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester) -> None:
    """``pytest --markers``/``--fixtures`` in a bare directory list the plugin's names (in-process: fast)."""
    pytester.makeini(INI)
    result = pytester.runpytest("--markers", "-p", "no:django")
    result.stdout.fnmatch_lines(["@pytest.mark.airlock_no_enqueue: fail the test if its body enqueues*"])
    result = pytester.runpytest("--fixtures", "-p", "no:django")
    result.stdout.fnmatch_lines(["airlock_capture -- *", "airlock_eager -- *"])
