"""Huey glue: option mapping, fallbacks, trace carrying and ``airlock_task``'s edge cases.

These run Huey itself on its in-memory storage (``MemoryHuey``), taking tasks off
the queue by hand or in immediate mode; the real storages are in test_huey_storages.py.
"""

from __future__ import annotations

import datetime
from typing import Any
from unittest import mock

import pytest
from huey import MemoryHuey
from huey.api import Result, Task
from huey.exceptions import CancelExecution, RetryTask

import airlock
from airlock.integrations.huey import TRACE_KWARG, airlock_task, huey_executor
from airlock.testing import capture
from tests.queue_glue_support import import_without, stub_tracing


@pytest.fixture
def huey() -> MemoryHuey:
    return MemoryHuey("airlock-glue", utc=True)


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    return stub_tracing(monkeypatch)


def queued(huey: MemoryHuey) -> list[Task]:
    tasks = []
    while (task := huey.dequeue()) is not None:
        tasks.append(task)
    return tasks


# -- the executor ------------------------------------------------------------------


def test_task_is_enqueued_with_all_its_own_kwargs(huey: MemoryHuey) -> None:
    @huey.task()
    def remind(user: int, delay: int = 0, priority: str = "low") -> None: ...

    with capture(dispatch=True) as events, airlock.scope(executor=huey_executor):
        intent = airlock.enqueue(remind, 7, delay=30, priority="high")
    (task,) = queued(huey)
    # Calling remind(7, delay=30, ...) would have made them scheduling options instead.
    assert (task.args, task.kwargs, task.priority) == ((7,), {"delay": 30, "priority": "high"}, None)
    assert huey.ready_to_run(task), "queued to run at once, not 30 seconds later"
    (result,) = [event.kwargs["result"] for event in events.of("intent_dispatched")]
    assert isinstance(result, Result) and result.id == task.id
    assert intent.name == "remind"


@pytest.mark.parametrize(
    "option",
    [{"delay": 60}, {"delay": datetime.timedelta(seconds=60)}, {"eta": "in a minute"}],
    ids=["seconds", "timedelta", "eta"],
)
def test_delay_or_eta_schedules_the_task(huey: MemoryHuey, option: dict[str, Any]) -> None:
    @huey.task()
    def later() -> None: ...

    if option.get("eta") == "in a minute":
        option = {"eta": datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60)}
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(later, _dispatch_options={**option, "retries": 2})
    (task,) = queued(huey)
    assert task.retries == 2
    assert datetime.timedelta(seconds=59) < task.eta - before < datetime.timedelta(seconds=61)


def test_options_without_a_time_are_set_on_the_task(huey: MemoryHuey) -> None:
    @huey.task()
    def urgent() -> None: ...

    options = {"priority": 9, "retries": 3, "retry_delay": 5, "timeout": 10, "id": "fixed", "expires": 60}
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(urgent, _dispatch_options=options)
    (task,) = queued(huey)
    assert (task.priority, task.retries, task.retry_delay, task.timeout, task.id) == (9, 3, 5, 10, "fixed")
    assert huey.ready_to_run(task) and task.expires_resolved is not None


def test_a_huey_task_always_goes_through_schedule_by_keyword(huey: MemoryHuey) -> None:
    """As airlock-py calls it; without an eta or delay, ``delay=0`` (Huey's schedule() needs one)."""

    @huey.task()
    def remind(user: int, delay: int = 0) -> None: ...

    with mock.patch.object(remind, "schedule", wraps=remind.schedule) as schedule:
        with airlock.scope(executor=huey_executor):
            airlock.enqueue(remind, 7, delay=30)
            airlock.enqueue(remind, 8, _dispatch_options={"priority": 5})
            airlock.enqueue(remind, 9, _dispatch_options={"delay": 60})
    assert schedule.call_args_list == [
        mock.call(args=(7,), kwargs={"delay": 30}, delay=0),
        mock.call(args=(8,), kwargs={}, delay=0, priority=5),
        mock.call(args=(9,), kwargs={}, delay=60),
    ]
    ready = sorted((task.args, huey.ready_to_run(task)) for task in queued(huey))
    assert ready == [((7,), True), ((8,), True), ((9,), False)]


def test_a_task_mock_gets_exactly_airlock_pys_schedule_call() -> None:
    task = mock.MagicMock()
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(task, 1, x=2)
        airlock.enqueue(task, 3, _dispatch_options={"delay": 4, "priority": 1})
    assert task.schedule.call_args_list == [
        mock.call(args=(1,), kwargs={"x": 2}),
        mock.call(args=(3,), kwargs={}, delay=4, priority=1),
    ]
    task.assert_not_called()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"dealy": 5}, "'dealy' (did you mean 'delay'?)"),
        ({"countdown": 5}, "'countdown'"),
        ({"queue": "emails"}, "'queue'"),
    ],
    ids=["typo", "celery-option", "no-queues-in-huey"],
)
def test_unknown_options_are_refused_before_anything_is_sent(
    huey: MemoryHuey, options: dict[str, Any], expected: str
) -> None:
    @huey.task()
    def notify() -> None: ...

    with pytest.raises(TypeError, match="unknown _dispatch_options") as error:
        with airlock.scope(executor=huey_executor):
            airlock.enqueue(notify, _dispatch_options=options)
    assert expected in str(error.value)
    assert huey.pending_count() == 0


def test_plain_function_runs_in_process_and_refuses_options() -> None:
    calls: list[int] = []
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(calls.append, 1)
    assert calls == [1]
    with pytest.raises(TypeError, match="is not a Huey task"):
        with airlock.scope(executor=huey_executor):
            airlock.enqueue(calls.append, 2, _dispatch_options={"delay": 5})
    assert calls == [1]


def test_task_like_object_uses_its_own_schedule() -> None:
    class Scheduled:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []

        def __call__(self, *args: Any, **kwargs: Any) -> str:
            self.calls.append(("call", args, kwargs))
            return "called"

        def schedule(self, *, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> str:
            self.calls.append(("schedule", args, kwargs, options))
            return "scheduled"

    task = Scheduled()
    with airlock.scope(executor=huey_executor):
        airlock.enqueue(task, 1, x=2)
        airlock.enqueue(task, 3, _dispatch_options={"delay": 4})
    assert task.calls == [("schedule", (1,), {"x": 2}, {}), ("schedule", (3,), {}, {"delay": 4})]


def test_trace_context_reaches_airlock_tasks_only_and_is_removed(
    huey: MemoryHuey, traced: list[tuple[Any, ...]]
) -> None:
    received: list[dict[str, Any]] = []

    @airlock_task(huey)
    def wrapped(**kwargs: Any) -> None:
        received.append(kwargs)

    @huey.task()
    def plain(**kwargs: Any) -> None:
        received.append(kwargs)

    with airlock.scope(executor=huey_executor):
        airlock.enqueue(wrapped, a=1)
        airlock.enqueue(plain, b=2)
    first, second = queued(huey)
    assert first.kwargs == {"a": 1, TRACE_KWARG: {"traceparent": "00-abc-01"}}
    assert second.kwargs == {"b": 2}, "a task that cannot remove the carrier never receives it"
    huey.execute(first)
    huey.execute(second)
    assert received == [{"a": 1}, {"b": 2}]
    assert traced == [({"traceparent": "00-abc-01"}, "wrapped", "huey")]


# -- airlock_task ----------------------------------------------------------------------


def test_follow_ups_go_out_after_the_run_and_through_the_executor(huey: MemoryHuey) -> None:
    order: list[str] = []

    @huey.task()
    def child(label: str) -> None: ...

    @airlock_task(huey, executor=huey_executor, retries=2, name="parent-task")
    def parent() -> str:
        airlock.enqueue(child, "a")
        order.append(f"body ends with {huey.pending_count()} queued")
        return "done"

    assert parent.task_class.default_retries == 2
    assert parent.task_class.__name__ == "parent-task"
    parent()
    (task,) = queued(huey)
    assert huey.execute(task) == "done"
    assert order == ["body ends with 0 queued"]
    assert [t.args for t in queued(huey)] == [("a",)]


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), RetryTask(), CancelExecution(retry=True)], ids=["error", "retry", "cancel"]
)
def test_a_run_that_raises_or_retries_sends_nothing(huey: MemoryHuey, error: Exception) -> None:
    @huey.task()
    def child() -> None: ...

    @airlock_task(huey, executor=huey_executor, retries=1)
    def parent() -> None:
        airlock.enqueue(child)
        raise error

    parent()
    (task,) = queued(huey)
    with capture(dispatch=True) as events:
        huey.execute(task)
    assert [intent.name for intent in events.discarded] == ["child"]
    assert [t.name for t in queued(huey)] == ["parent"], "the retry is queued, the follow-up is not"


def test_policy_of_the_task_applies_to_its_run(huey: MemoryHuey) -> None:
    ran: list[str] = []

    @airlock_task(huey, policy=airlock.BlockTasks(["blocked"]))
    def parent() -> None:
        airlock.enqueue(ran.append, "allowed")
        airlock.enqueue(ran.append, "blocked", _name="blocked")

    parent.call_local()
    assert ran == ["allowed"]


def test_immediate_mode_runs_follow_ups_after_the_task() -> None:
    huey = MemoryHuey("airlock-immediate", immediate=True)
    order: list[str] = []

    @huey.task()
    def child() -> None:
        order.append("child")

    @airlock_task(huey, executor=huey_executor)
    def parent() -> None:
        airlock.enqueue(child)
        order.append("parent")

    with airlock.scope(executor=huey_executor):
        airlock.enqueue(parent)
    assert order == ["parent", "child"]


def test_async_functions_are_refused(huey: MemoryHuey) -> None:
    with pytest.raises(TypeError, match="async function"):

        @airlock_task(huey)
        async def fetch() -> None: ...


# -- packaging -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["airlock.integrations.executors.huey", "airlock.integrations.huey"], ids=["executor", "task-run"]
)
def test_import_without_huey_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    with pytest.raises(ImportError, match=r"pip install 'airlock-dispatch\[huey\]'"):
        import_without(
            monkeypatch, "huey", module, ("airlock.integrations.executors.huey", "airlock.integrations.huey")
        )
