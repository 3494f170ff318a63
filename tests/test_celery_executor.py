"""celery_executor: how it calls Celery, checks options, carries traces and batches a flush."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Any
from unittest import mock

import pytest
from celery.result import AsyncResult

import airlock
from airlock import _context
from airlock.integrations.executors.celery import CELERY_OPTIONS, celery_executor, publishing
from airlock.signals import dispatch_failed, intent_dispatched
from tests.celery_support import IDLE_QUEUE, make_broker, new_token


class Recorder:
    """Stands in for a Celery task: records how the executor called it (our glue only)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("call", args, kwargs))

    def apply_async(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append(("apply_async", args, kwargs))
        return "sent"


class DelayOnly:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("must not be called in-process")

    def delay(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append((args, kwargs))
        return "delayed"


def dispatch(task: Any, *args: Any, _dispatch_options: Any = None, **kwargs: Any) -> list[Any]:
    results: list[Any] = []
    intent_dispatched.connect(lambda scope, intent, result: results.append(result), weak=False)
    with airlock.scope(executor=celery_executor):
        airlock.enqueue(task, *args, _dispatch_options=_dispatch_options, **kwargs)
    return results


def test_options_become_apply_async_keywords() -> None:
    task = Recorder()
    options = {"countdown": 5, "queue": "emails", "priority": 9, "expires": 60, "headers": {"a": "1"}}
    assert dispatch(task, 7, force=True, _dispatch_options=options) == ["sent"]
    assert task.calls == [("apply_async", (), {"args": (7,), "kwargs": {"force": True}, **options})]


def test_no_options_means_a_bare_apply_async() -> None:
    task = Recorder()
    dispatch(task, 7)
    assert task.calls == [("apply_async", (), {"args": (7,), "kwargs": {}})]


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "publishing"])
def test_apply_async_is_called_by_keyword_as_airlock_py_calls_it(batched: bool) -> None:
    """A test of the user's that asserts the call on a mock keeps passing, in and out of publishing()."""
    task = mock.MagicMock()
    with publishing() if batched else contextlib.nullcontext(), airlock.scope(executor=celery_executor):
        airlock.enqueue(task, 7, force=True)
        airlock.enqueue(task, 8, _dispatch_options={"countdown": 60, "queue": "emails"})
    producer = {"producer": mock.ANY} if batched else {}
    assert task.apply_async.call_args_list == [
        mock.call(args=(7,), kwargs={"force": True}, **producer),
        mock.call(args=(8,), kwargs={}, countdown=60, queue="emails", **producer),
    ]
    task.assert_not_called()
    task.delay.assert_not_called()


def test_unknown_option_fails_loudly_with_a_suggestion() -> None:
    failures = []
    dispatch_failed.connect(lambda scope, intent, error: failures.append(error), weak=False)
    task = Recorder()
    with pytest.raises(TypeError, match=r"'countdwon' \(did you mean 'countdown'\?\)"):
        dispatch(task, 7, _dispatch_options={"countdwon": 5})
    assert task.calls == []
    assert len(failures) == 1


def test_stamps_named_by_stamped_headers_are_accepted() -> None:
    task = Recorder()
    dispatch(task, _dispatch_options={"stamped_headers": ["tenant"], "tenant": "t1"})
    assert task.calls[0][2] == {"args": (), "kwargs": {}, "stamped_headers": ["tenant"], "tenant": "t1"}


def test_known_option_names_cover_celerys_documented_ones() -> None:
    documented = {
        "countdown",
        "eta",
        "expires",
        "queue",
        "priority",
        "headers",
        "task_id",
        "link",
        "link_error",
        "shadow",
        "routing_key",
        "exchange",
        "serializer",
        "compression",
        "retry",
        "retry_policy",
        "time_limit",
        "soft_time_limit",
        "ignore_result",
    }
    assert documented <= CELERY_OPTIONS
    assert {"args", "kwargs", "task_type", "result_cls"}.isdisjoint(CELERY_OPTIONS)


def test_delay_only_task_gets_delay() -> None:
    task = DelayOnly()
    assert dispatch(task, 1, b=2) == ["delayed"]
    assert task.calls == [((1,), {"b": 2})]


def test_delay_only_task_refuses_options() -> None:
    with pytest.raises(TypeError, match=r"has \.delay\(\) but no \.apply_async\(\)"):
        dispatch(DelayOnly(), _dispatch_options={"countdown": 1})


def test_plain_function_is_called_in_process() -> None:
    calls = []

    def plain(x: int) -> int:
        calls.append(x)
        return x * 2

    assert dispatch(plain, 21) == [42]
    assert calls == [21]


def test_async_function_is_refused_rather_than_left_unawaited() -> None:
    async def coroutine_task() -> None:
        pass

    with pytest.raises(TypeError, match="async function"):
        dispatch(coroutine_task)


def test_trace_context_is_merged_into_headers_and_user_headers_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_context.hooks, "inject_trace", lambda c: c.update(traceparent="00-t-01", tenant="x"))
    task = Recorder()
    dispatch(task, _dispatch_options={"headers": {"tenant": "mine"}, "queue": "q"})
    dispatch(task)
    assert task.calls[0][2]["headers"] == {"traceparent": "00-t-01", "tenant": "mine"}
    assert task.calls[0][2]["queue"] == "q"
    assert task.calls[1][2]["headers"] == {"traceparent": "00-t-01", "tenant": "x"}


@pytest.mark.parametrize(
    "module", ["airlock.integrations.executors.celery", "airlock.integrations.celery"], ids=["executor", "task"]
)
def test_import_without_celery_names_the_extra(module: str) -> None:
    # A None entry in sys.modules makes `import celery` fail, as if it were not installed.
    code = (
        f"import sys\nsys.modules['celery'] = None\ntry:\n    import {module}\nexcept ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'airlock[celery]'" in out


# -- publishing(): one producer for a whole flush, on the real Redis --------------------


@pytest.fixture
def redis_broker(redis_url: str) -> Any:
    broker = make_broker("redis")
    yield broker
    broker.purge(IDLE_QUEUE)


def test_publishing_borrows_one_producer_and_sends_every_message_at_once(
    redis_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = redis_broker.app.producer_pool
    borrowed = []
    real_acquire = pool.acquire
    monkeypatch.setattr(pool, "acquire", lambda *a, **k: borrowed.append(1) or real_acquire(*a, **k))
    results: list[Any] = []
    intent_dispatched.connect(lambda scope, intent, result: results.append(result), weak=False)
    token = new_token()
    with publishing():
        with airlock.scope(executor=celery_executor):
            for number in range(5):
                airlock.enqueue(redis_broker.record, token, number, _dispatch_options={"queue": IDLE_QUEUE})
        # Still inside the block: each message already reached the broker.
        assert redis_broker.depth(IDLE_QUEUE) == 5
    assert len(borrowed) == 1
    assert all(isinstance(result, AsyncResult) for result in results)
    assert len({result.id for result in results}) == 5
    borrowed.clear()
    with airlock.scope(executor=celery_executor):
        for number in range(3):
            airlock.enqueue(redis_broker.record, token, number, _dispatch_options={"queue": IDLE_QUEUE})
    assert len(borrowed) == 3  # without the block, one per message
    assert redis_broker.depth(IDLE_QUEUE) == 8


class _Producer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __enter__(self) -> _Producer:
        self.log.append("borrowed")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.log.append("returned")


class _App:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def producer_or_acquire(self) -> _Producer:
        return _Producer(self.log)


class FlakyTask(Recorder):
    """Fails when handed the batch's producer: the batch must fall back to Celery's own path."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.app = _App(self.log)

    def apply_async(self, *args: Any, **kwargs: Any) -> str:
        if "producer" in kwargs:
            raise ConnectionError("the held connection broke")
        return super().apply_async(*args, **kwargs)


def test_publishing_falls_back_to_celerys_path_when_the_held_producer_fails() -> None:
    task = FlakyTask()
    with publishing(), airlock.scope(executor=celery_executor):
        airlock.enqueue(task, 1)
        airlock.enqueue(task, 2)
    assert [call[2] for call in task.calls] == [{"args": (1,), "kwargs": {}}, {"args": (2,), "kwargs": {}}]
    assert task.log == ["borrowed", "returned"]
