"""celery_executor: how it calls Celery, checks options, carries traces and batches a flush."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from celery import Celery
from celery.result import AsyncResult

import airlock
from airlock import _context
from airlock.integrations.executors._deadline import DEFAULT_PUBLISH_TIMEOUT
from airlock.integrations.executors.celery import CELERY_OPTIONS, _producer_pool, celery_executor, publishing
from airlock.signals import dispatch_failed, intent_dispatched
from tests.celery_support import IDLE_QUEUE, make_broker, new_token
from tests.conftest import require_service
from tests.faults import RABBITMQ, OwnRedis, Proxy

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


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
    # A mock's app is no real Celery app, so nothing is held; the shape is what matters.
    calls = [
        (call.args, {k: v for k, v in call.kwargs.items() if k != "producer"})
        for call in task.apply_async.call_args_list
    ]
    assert calls == [
        ((), {"args": (7,), "kwargs": {"force": True}}),
        ((), {"args": (8,), "kwargs": {}, "countdown": 60, "queue": "emails"}),
    ]
    task.assert_not_called()
    task.delay.assert_not_called()


def test_unknown_option_fails_loudly_at_enqueue_with_a_suggestion() -> None:
    failures = []
    dispatch_failed.connect(lambda scope, intent, error: failures.append(error), weak=False)
    task = Recorder()
    with pytest.raises(TypeError, match=r"'countdwon' \(did you mean 'countdown'\?\)"):
        dispatch(task, 7, _dispatch_options={"countdwon": 5})
    assert task.calls == []
    assert failures == []  # refused by enqueue(): never buffered, so never dispatched


def test_unknown_option_is_still_refused_at_dispatch() -> None:
    """An intent that never went through enqueue() (built by hand) is checked when sent."""
    task = Recorder()
    with pytest.raises(TypeError, match="countdwon"):
        celery_executor(airlock.Intent(task, (7,), dispatch_options={"countdwon": 5}))
    assert task.calls == []


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
    assert "pip install 'airlock-dispatch[celery]'" in out


# -- publishing(): one producer for a whole flush, on the real Redis --------------------


@pytest.fixture
def redis_broker(redis_url: str) -> Any:
    broker = make_broker("redis")
    yield broker
    broker.purge(IDLE_QUEUE)


def test_publishing_borrows_one_producer_and_sends_every_message_at_once(
    redis_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, _errors = _producer_pool(redis_broker.app, DEFAULT_PUBLISH_TIMEOUT)
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


def _never_runs(number: int) -> None:
    """No worker consumes the queue: only the messages count."""


@pytest.fixture
def restart_queue() -> Iterator[str]:
    queue = f"airlock-test-restart-{new_token()}"
    yield queue
    with Celery("airlock_test_purge", broker=AMQP, set_as_current=False).connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)


@pytest.mark.parametrize("held", [True, False], ids=["publishing", "per-message"])
@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_a_connection_closed_by_a_broker_restart_is_replaced_not_failed(
    kind: str, held: bool, restart_queue: str
) -> None:
    """A restart between two flushes leaves dead pooled connections: the next flush
    still sends everything (one retry on a fresh connection, never a failure)."""
    require_service(kind)
    failed: list[BaseException] = []
    dispatch_failed.connect(lambda scope, intent, error: failed.append(error), weak=False)
    sent: list[Any] = []
    intent_dispatched.connect(lambda scope, intent, result: sent.append(result), weak=False)
    with OwnRedis() if kind == "redis" else Proxy(RABBITMQ) as server:
        url = server.url if isinstance(server, OwnRedis) else f"amqp://guest:guest@127.0.0.1:{server.port}//"
        app = Celery("airlock_test_restart", broker=url, set_as_current=False)
        app.conf.update(task_default_queue=restart_queue, broker_connection_retry_on_startup=False)
        task = app.task(name="airlock_test.restart")(_never_runs)
        with publishing() if held else contextlib.nullcontext():
            with airlock.scope(executor=celery_executor):
                airlock.enqueue(task, 1)
            if isinstance(server, OwnRedis):
                server.stop()
                server.start()
            else:
                server.drop()
            with airlock.scope(executor=celery_executor):
                airlock.enqueue(task, 2)
                airlock.enqueue(task, 3)
        app.close()
    assert failed == []
    assert len(sent) == 3


def test_a_fork_while_another_thread_holds_the_producer_pools_lock_leaves_the_child_a_free_one() -> None:
    """gunicorn --preload forks right after import, perhaps while the outbox's publisher builds a pool."""
    import os
    import threading
    import warnings

    from airlock.integrations.executors import celery as module

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with module._pools_lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork() with threads running
            pid = os.fork()
        if pid == 0:  # the child: the lock must be free, and the pools empty
            os._exit(0 if module._pools_lock.acquire(timeout=2) and not module._pools else 1)
    finally:
        release.set()
        holder.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
