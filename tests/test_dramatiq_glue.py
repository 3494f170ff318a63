"""Dramatiq glue: option checks, fallbacks, trace carrying and the middleware's edge cases.

These run Dramatiq itself on its in-memory ``StubBroker`` (with a real ``Worker``
where a message is processed); the real brokers are in test_dramatiq_brokers.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from unittest import mock

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, Middleware, SkipMessage

import airlock
from airlock.integrations.dramatiq import TRACE_OPTION, AirlockMiddleware, dramatiq_executor
from airlock.testing import capture
from tests.queue_glue_support import import_without, stub_tracing


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    return stub_tracing(monkeypatch)


def queued(broker: StubBroker, queue: str = "default") -> list[dramatiq.Message[Any]]:
    return [dramatiq.Message.decode(data) for data in list(broker.queues[queue].queue)]


def run_worker(broker: StubBroker, queue: str = "default") -> None:
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join(queue, timeout=5_000, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


# -- the executor ------------------------------------------------------------------


def test_actor_is_sent_with_its_args_kwargs_and_options(broker: StubBroker) -> None:
    @dramatiq.actor(broker=broker)
    def notify(user: int, channel: str = "mail") -> None: ...

    with capture(dispatch=True) as events, airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(notify, 7, channel="sms", _dispatch_options={"max_retries": 2, "time_limit": 1_000})
    (message,) = queued(broker)
    assert (message.args, message.kwargs) == ((7,), {"channel": "sms"})
    assert message.options == {"max_retries": 2, "time_limit": 1_000}
    assert TRACE_OPTION not in message.options, "no carrier unless tracing is on"
    (result,) = [event.kwargs["result"] for event in events.of("intent_dispatched")]
    assert result.message_id == message.message_id


def test_delay_goes_to_the_delay_queue(broker: StubBroker) -> None:
    @dramatiq.actor(broker=broker)
    def later() -> None: ...

    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(later, _dispatch_options={"delay": 60_000})
    assert queued(broker) == []
    (message,) = queued(broker, "default.DQ")
    assert message.options["eta"] > 0


def test_options_declared_by_a_custom_middleware_are_accepted(broker: StubBroker) -> None:
    class Tenancy(Middleware):
        @property
        def actor_options(self) -> set[str]:
            return {"tenant"}

    broker.add_middleware(Tenancy())

    @dramatiq.actor(broker=broker)
    def bill() -> None: ...

    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(bill, _dispatch_options={"tenant": "acme"})
    assert queued(broker)[0].options["tenant"] == "acme"


@pytest.mark.parametrize(
    "declared", [["tenant"], ("tenant",), frozenset({"tenant"})], ids=["list", "tuple", "frozenset"]
)
def test_actor_options_of_any_collection_type_are_read(broker: StubBroker, declared: Any) -> None:
    """A broker may declare its actor options as a list, tuple or frozenset, not only a set."""

    @dramatiq.actor(broker=broker)
    def bill() -> None: ...

    broker.actor_options = declared  # after the declaration, which needs a set itself
    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(bill, _dispatch_options={"tenant": "acme", "delay": 10})
    assert queued(broker, "default.DQ")[0].options["tenant"] == "acme"
    with pytest.raises(TypeError, match=r"'tenat' \(did you mean 'tenant'\?\)"):
        with airlock.scope(executor=dramatiq_executor):
            airlock.enqueue(bill, _dispatch_options={"tenat": "acme"})


def test_an_actor_mock_gets_exactly_airlock_pys_send_with_options_call() -> None:
    """No broker says what options it takes, so they are passed on unchecked."""
    actor = mock.MagicMock()
    plain = mock.MagicMock(spec=["send_with_options", "__call__"])  # no broker attribute at all
    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(actor, 7, channel="sms")
        airlock.enqueue(actor, 8, _dispatch_options={"max_retries": 2, "delay": 50})
        airlock.enqueue(plain, 9, _dispatch_options={"time_limit": 1_000})
    assert actor.send_with_options.call_args_list == [
        mock.call(args=(7,), kwargs={"channel": "sms"}),
        mock.call(args=(8,), kwargs={}, max_retries=2, delay=50),
    ]
    plain.send_with_options.assert_called_once_with(args=(9,), kwargs={}, time_limit=1_000)
    actor.send.assert_not_called()
    actor.assert_not_called()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"dealy": 5}, "'dealy' (did you mean 'delay'?)"),
        ({"max_retry": 1}, "'max_retry' (did you mean 'max_retries'?)"),
        ({"priority": 1}, "Dramatiq sets priority per actor"),
        ({TRACE_OPTION: {}}, f"{TRACE_OPTION!r}"),
    ],
    ids=["typo", "middleware-typo", "priority", "reserved-trace-option"],
)
def test_unknown_options_are_refused_before_anything_is_sent(
    broker: StubBroker, options: dict[str, Any], expected: str
) -> None:
    @dramatiq.actor(broker=broker)
    def notify() -> None: ...

    with pytest.raises(TypeError, match="unknown _dispatch_options") as error:
        with airlock.scope(executor=dramatiq_executor):
            airlock.enqueue(notify, _dispatch_options=options)
    assert expected in str(error.value)
    assert "for notify" in str(error.value)
    assert queued(broker) == []


def test_send_only_object_is_sent_and_refuses_options() -> None:
    class SendOnly:
        def __init__(self) -> None:
            self.sent: list[tuple[Any, ...]] = []

        def __call__(self, *args: Any) -> None: ...

        def send(self, *args: Any, **kwargs: Any) -> str:
            self.sent.append((args, kwargs))
            return "sent"

    task = SendOnly()
    with capture(dispatch=True) as events, airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(task, 1, flag=True)
    assert task.sent == [((1,), {"flag": True})]
    assert [event.kwargs["result"] for event in events.of("intent_dispatched")] == ["sent"]
    with pytest.raises(TypeError, match=r"has \.send\(\) but no \.send_with_options\(\)"):
        with airlock.scope(executor=dramatiq_executor):
            airlock.enqueue(task, 1, _dispatch_options={"delay": 5})
    assert len(task.sent) == 1


def test_plain_function_runs_in_process_and_refuses_options() -> None:
    calls: list[int] = []
    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(calls.append, 1)
    assert calls == [1]
    with pytest.raises(TypeError, match="is not an actor"):
        with airlock.scope(executor=dramatiq_executor):
            airlock.enqueue(calls.append, 2, _dispatch_options={"delay": 5})
    assert calls == [1]


def test_trace_context_travels_in_the_message_and_is_continued(
    broker: StubBroker, traced: list[tuple[Any, ...]]
) -> None:
    broker.add_middleware(AirlockMiddleware(executor=dramatiq_executor))

    @dramatiq.actor(broker=broker)
    def traced_actor() -> None: ...

    with airlock.scope(executor=dramatiq_executor):
        airlock.enqueue(traced_actor, _dispatch_options={"max_retries": 0})
    (message,) = queued(broker)
    assert message.options[TRACE_OPTION] == {"traceparent": "00-abc-01"}
    assert message.options["max_retries"] == 0
    run_worker(broker)
    assert traced == [({"traceparent": "00-abc-01"}, "traced_actor", "dramatiq")]


# -- the middleware -----------------------------------------------------------------


def test_policy_and_executor_of_the_middleware_apply_to_the_run(broker: StubBroker) -> None:
    sent: list[str] = []
    broker.add_middleware(AirlockMiddleware(airlock.BlockTasks(["blocked"]), executor=lambda i: sent.append(i.name)))

    def allowed() -> None: ...

    def blocked() -> None: ...

    @dramatiq.actor(broker=broker)
    def job() -> None:
        airlock.enqueue(allowed)
        airlock.enqueue(blocked)

    job.send()
    run_worker(broker)
    assert sent == ["allowed"]


class Skip(Middleware):
    def before_process_message(self, broker: Any, message: Any) -> None:
        raise SkipMessage("not today")


@pytest.mark.parametrize(
    ("middleware", "expected"),
    [
        ((AirlockMiddleware, Skip), ["scope_entered", "scope_discarded"]),
        ((Skip, AirlockMiddleware), []),
    ],
    ids=["skipped-in-the-scope", "skipped-before-the-scope"],
)
def test_a_skipped_message_discards_its_scope_if_it_had_one(
    broker: StubBroker, middleware: tuple[type[Middleware], ...], expected: list[str]
) -> None:
    for cls in middleware:
        broker.add_middleware(cls())

    @dramatiq.actor(broker=broker)
    def skipped() -> None: ...

    with capture() as events:
        skipped.send()
        run_worker(broker)
    assert events.names == expected


def test_a_failing_actor_discards_with_its_error(broker: StubBroker) -> None:
    broker.add_middleware(AirlockMiddleware())

    @dramatiq.actor(broker=broker, max_retries=0)
    def failing() -> None:
        airlock.enqueue(print, "never")
        raise ValueError("boom")

    with capture() as events:
        failing.send()
        run_worker(broker)
    (discarded,) = events.of("scope_discarded")
    assert [intent.name for intent in discarded.kwargs["intents"]] == ["print"]
    assert isinstance(discarded.kwargs["error"], ValueError)


def test_async_actor_sees_the_scope_of_its_run(broker: StubBroker) -> None:
    broker.add_middleware(AsyncIO())
    broker.add_middleware(AirlockMiddleware())
    seen: list[str] = []

    @dramatiq.actor(broker=broker)
    async def fetch() -> None:
        await asyncio.sleep(0)
        airlock.enqueue(seen.append, "after the run")
        seen.append("in the run")

    fetch.send()
    run_worker(broker)
    assert seen == ["in the run", "after the run"]


# -- packaging -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    ["airlock.integrations.executors.dramatiq", "airlock.integrations.dramatiq"],
    ids=["executor", "middleware"],
)
def test_import_without_dramatiq_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    with pytest.raises(ImportError, match=r"pip install 'airlock-dispatch\[dramatiq\]'"):
        import_without(
            monkeypatch,
            "dramatiq",
            module,
            ("airlock.integrations.executors.dramatiq", "airlock.integrations.dramatiq"),
        )
