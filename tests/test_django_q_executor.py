"""``django_q_executor`` against django-q2's real ORM broker: what lands in the queue.

No worker here (see test_django_q_cluster.py): each test reads back the task
package django-q2 stored in its ``OrmQ`` table.
"""

from __future__ import annotations

import copy
import operator
import pickle
import re
import subprocess
import sys
from functools import partial

import pytest
from django.conf import settings
from django_q.brokers import get_broker
from django_q.models import OrmQ

import airlock
from airlock import Intent, signals
from airlock._context import hooks
from airlock.integrations.django_q import TRACE_KEY, call_task
from airlock.integrations.executors.django_q import DJANGO_Q_OPTIONS, RESERVED_KWARGS, django_q_executor
from tests.conftest import require_service
from tests.django_q_support import ROOT
from tests.django_q_support.tasks import record

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue():
    """The ORM broker's table on the test database (PostgreSQL, or SQLite if chosen)."""
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        require_service("postgres")
    return OrmQ.objects


def packages() -> list[dict]:
    return [row.task for row in OrmQ.objects.order_by("id")]


def flush(task, *args, _dispatch_options=None, **kwargs):
    with airlock.scope(executor=django_q_executor) as scope:
        airlock.enqueue(task, *args, _dispatch_options=_dispatch_options, **kwargs)
    return scope


def test_queues_the_function_and_returns_the_task_id(queue):
    with signals.intent_dispatched.connected_to(dispatched := lambda sender, **kw: results.append(kw["result"])):
        results: list[str] = []
        flush(record, 7, "x", force=True)
    [package] = packages()
    assert package["func"] is record
    assert package["args"] == (7, "x")
    assert package["kwargs"] == {"force": True}
    assert results == [package["id"]]
    assert dispatched  # keeps the weakly held receiver alive until here


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"group": "emails"}, {"group": "emails"}),
        ({"timeout": 5}, {"timeout": 5}),
        ({"hook": "tests.django_q_support.tasks.child"}, {"hook": "tests.django_q_support.tasks.child"}),
        ({"task_name": "welcome-7"}, {"name": "welcome-7"}),
        ({"save": False, "ack_failure": True}, {"save": False, "ack_failure": True}),
        ({"q_options": {"group": "via-q", "timeout": 3, "task_name": "q-name"}},
         {"group": "via-q", "timeout": 3, "name": "q-name"}),
    ],
    ids=["group", "timeout", "hook", "task_name", "save-ack_failure", "q_options"],
)  # fmt: skip
def test_dispatch_options_become_package_fields(queue, options, expected):
    before = copy.deepcopy(options)
    with airlock.scope(executor=django_q_executor):
        intent = airlock.enqueue(record, 1, _dispatch_options=options)
    [package] = packages()
    assert {key: package.get(key) for key in expected} == expected
    assert package["kwargs"] == {}
    assert intent.dispatch_options == before  # async_task pops from q_options, not from the intent's


@pytest.mark.parametrize(
    "options",
    [{"cluster": "elsewhere"}, {"broker": "elsewhere"}, {"q_options": {"cluster": "elsewhere"}}],
    ids=["cluster", "broker", "q_options-cluster"],
)
def test_cluster_and_broker_choose_the_queue(queue, options):
    if "broker" in options:
        options = {"broker": get_broker(options["broker"])}
    flush(record, 1, _dispatch_options=options)
    assert list(queue.values_list("key", flat=True)) == ["elsewhere"]


def test_every_documented_option_is_taken_by_async_task():
    # Guards the hand-kept list against a django-q2 release renaming an option.
    import inspect

    from django_q.tasks import async_task

    source = inspect.getsource(async_task)
    assert all(f'"{name}"' in source for name in DJANGO_Q_OPTIONS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"grup": "x"}, "'grup' (did you mean 'group'?)"),
        ({"countdown": 5}, "'countdown'"),
        ({"q_options": {"timout": 1}}, "q_options['timout'] (did you mean 'timeout'?)"),
        ({"q_options": ["group"]}, "must be a dict"),
    ],
    ids=["typo", "celery-option", "q_options-typo", "q_options-not-a-dict"],
)
def test_bad_options_fail_before_anything_is_queued(queue, options, message):
    failures = []
    with signals.dispatch_failed.connected_to(lambda sender, **kw: failures.append(kw["error"])):
        with airlock.scope(executor=django_q_executor) as scope:
            with pytest.raises(TypeError, match="django_q_executor") as caught:
                airlock.enqueue(record, 1, _dispatch_options=options)
    assert message in str(caught.value)
    # Refused by enqueue() itself, while a transaction would still be open: nothing to dispatch.
    assert scope.intents == [] and failures == []
    assert not queue.exists()
    with pytest.raises(TypeError, match=re.escape(message)):  # the executor, called directly, too
        django_q_executor(Intent(record, (1,), dispatch_options=options))


@pytest.mark.parametrize("name", sorted(RESERVED_KWARGS))
def test_kwargs_named_like_options_are_sent_wrapped(queue, name):
    flush(record, 1, **{name: "mine", "other": 2}, _dispatch_options={"group": "g"})
    [package] = packages()
    assert package["func"] is call_task
    assert package["args"] == (record, (1,), {name: "mine", "other": 2})
    assert package["kwargs"] == {}
    assert package["group"] == "g"


def _closure():
    def inner():
        pass

    return inner


def shadowed():
    pass


_original_shadowed = shadowed


def shadowed():  # rebinding the name is the point of this case
    pass


@pytest.mark.parametrize(
    "task",
    [lambda: None, _closure(), _original_shadowed, partial(_closure(), 1)],
    ids=["lambda", "nested-function", "rebound-name", "partial-of-nested"],
)
def test_tasks_a_worker_cannot_import_are_refused(queue, task):
    with airlock.scope(executor=django_q_executor) as scope:
        with pytest.raises(TypeError, match="worker imports the task by its path"):
            airlock.enqueue(task)
    assert scope.intents == []  # refused at enqueue
    with pytest.raises(TypeError, match="worker imports the task by its path"):
        django_q_executor(Intent(task))
    assert not queue.exists()


MAIN_SCRIPT = """
import functools

import airlock
from airlock.integrations.executors.django_q import django_q_executor


def send_receipt(order_id):
    pass


class Mailer:
    def send(self, order_id):
        pass

    def __call__(self, order_id):
        pass


cases = {
    "function": send_receipt,
    "partial": functools.partial(send_receipt, 1),
    "method": Mailer().send,
    "callable-object": Mailer(),
}
for label, task in cases.items():
    with airlock.scope(executor=django_q_executor) as scope:
        try:
            airlock.enqueue(task, 7)
        except TypeError as error:
            print(label, "refused, buffered", len(scope.intents), "|", error)
        else:
            print(label, "accepted")
"""


def test_tasks_defined_in_main_are_refused_at_enqueue(tmp_path):
    """A script's own function pickles here, but a worker's __main__ is django-q2's: refused, with the fix."""
    script = tmp_path / "checkout.py"
    script.write_text(MAIN_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert sorted(lines) == ["callable-object", "function", "method", "partial"], result.stdout
    for label, line in lines.items():
        assert line.startswith("refused, buffered 0 | django_q_executor cannot queue "), line
        assert "is defined in __main__" in line
        what = "send_receipt" if label in ("function", "partial") else "Mailer"
        assert f"Move {what} into an importable module" in line


@pytest.mark.parametrize(
    "task",
    [partial(record, 1), operator.add, record.__call__],
    ids=["partial", "builtin", "method-wrapper"],
)
def test_other_importable_callables_are_queued(queue, task):
    flush(task, 2, 3)
    [package] = packages()
    assert pickle.dumps(package["func"]) == pickle.dumps(task)
    assert package["args"] == (2, 3)


def test_trace_context_goes_into_the_package(queue, monkeypatch):
    monkeypatch.setattr(hooks, "inject_trace", lambda carrier: carrier.update(traceparent="00-abc-01"))
    flush(record, 1)
    [package] = packages()
    assert package[TRACE_KEY] == {"traceparent": "00-abc-01"}
    assert package["kwargs"] == {}


def test_no_trace_field_without_a_tracer_or_a_context(queue, monkeypatch):
    flush(record, 1)
    monkeypatch.setattr(hooks, "inject_trace", lambda carrier: None)  # on, but no span is current
    flush(record, 2)
    assert [TRACE_KEY in package for package in packages()] == [False, False]


def test_plain_async_task_calls_get_no_trace_field(queue, monkeypatch):
    from django_q.tasks import async_task

    monkeypatch.setattr(hooks, "inject_trace", lambda carrier: carrier.update(traceparent="00-abc-01"))
    flush(record, 1)  # connects the pre_enqueue receiver
    async_task(record, 2)
    assert [TRACE_KEY in package for package in packages()] == [True, False]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "module", ["airlock.integrations.executors.django_q", "airlock.integrations.django_q"], ids=["executor", "wrapper"]
)
def test_missing_django_q2_names_the_extra(module):
    result = _python(f"import sys; sys.modules['django_q'] = None\nimport {module}")
    assert result.returncode == 1
    assert "pip install 'airlock-dispatch[django-q]'" in result.stderr


def test_importing_the_executor_needs_no_django_settings():
    # Settings files name the executor (AIRLOCK = {"EXECUTOR": ...}) before Django is set up.
    result = _python(
        "import os; os.environ.pop('DJANGO_SETTINGS_MODULE', None)\n"
        "from airlock.integrations.executors.django_q import django_q_executor\n"
        "from airlock.integrations.django_q import airlock_task\nprint('ok')"
    )
    assert result.stdout.strip() == "ok", result.stderr
