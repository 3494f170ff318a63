"""A flush into a broker that is down, gone mid-flush or frozen: bounded, and nothing lost.

Every broker here is one the test starts itself (tests/faults.py): our own Redis on
a free port, a closed port, or a proxy in front of RabbitMQ that the test stops.
Timings live in ``bench/bench_faults.py``; here, the behaviour: every intent is
sent or reported failed, and after the first failure the rest fail fast with
``BrokerUnavailableError`` instead of each waiting again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import airlock
from airlock.integrations.executors import BrokerUnavailableError, flush_window, publish_timeout
from airlock.integrations.executors._deadline import DEFAULT_PUBLISH_TIMEOUT
from airlock.integrations.executors.celery import make_celery_executor
from airlock.integrations.executors.dramatiq import make_dramatiq_executor
from airlock.integrations.executors.huey import make_huey_executor
from tests.conftest import require_service
from tests.faults import STOP_AFTER, OwnRedis, cases, fault, flush_into, target

pytestmark = pytest.mark.one_lane  # brokers of its own, stopped and frozen: the same queue libraries on every lane

COUNT = 10
# Far above any flush that works (a few seconds): only there so a hang fails the test.
CAP = 30.0

FACTORIES = {"celery": make_celery_executor, "dramatiq": make_dramatiq_executor, "huey": make_huey_executor}


@pytest.mark.parametrize(("queue", "name"), cases(), ids=[f"{q}-{f.replace(' ', '-')}" for q, f in cases()])
def test_every_intent_is_sent_or_reported_and_the_rest_fail_fast(queue: str, name: str) -> None:
    if name.startswith("rabbitmq"):
        require_service("rabbitmq")
    outcome = flush_into(queue, name, count=COUNT, cap=CAP)
    assert outcome.finished, f"the flush was still blocked after {CAP} s"
    sent = STOP_AFTER if "mid-flush" in name else 0
    assert len(outcome.dispatched) == sent
    assert len(outcome.failed) == COUNT - sent
    numbers = [intent.args[0] for intent in outcome.dispatched] + [intent.args[0] for intent, _ in outcome.failed]
    assert sorted(numbers) == list(range(COUNT))  # each once: none lost, none twice
    assert isinstance(outcome.raised, airlock.DispatchError)  # the caller hears of each one too
    assert [(i.args[0], e) for i, e in outcome.raised.failures] == [(i.args[0], e) for i, e in outcome.failed]
    (_first, first_error), *rest = outcome.failed
    assert not isinstance(first_error, BrokerUnavailableError)  # the one that really tried
    for _, error in rest:
        assert isinstance(error, BrokerUnavailableError)
        assert error.__cause__ is first_error
        assert type(first_error).__name__ in str(error)  # names what went wrong first


@pytest.mark.parametrize("queue", ["celery", "dramatiq", "huey"])
def test_the_breaker_lasts_one_flush_window(queue: str) -> None:
    """A broker that failed in one window is tried again in the next (it is back now)."""
    with OwnRedis() as server:
        url = server.url
        task, executor, close = target(queue, url)
        try:
            server.stop()
            with flush_window(), pytest.raises(Exception) as first:
                _send(task, executor, 1)
            assert not isinstance(first.value, BrokerUnavailableError)
            server.start()
            with flush_window():
                _send(task, executor, 2)  # no error: tried again, and sent
        finally:
            close()


@pytest.mark.parametrize("queue", ["celery", "dramatiq", "huey"])
def test_outside_a_window_the_breaker_closes_after_the_timeout(queue: str) -> None:
    with OwnRedis() as server:
        task, _executor, close = target(queue, server.url)
        executor = FACTORIES[queue](timeout=0.3)
        try:
            server.stop()
            with pytest.raises(Exception) as first:
                executor(airlock.Intent(task, (1,)))
            with pytest.raises(BrokerUnavailableError):
                executor(airlock.Intent(task, (2,)))  # within the timeout: not tried
            server.start()
            time.sleep(0.35)
            executor(airlock.Intent(task, (3,)))  # later: tried again, and sent
            assert not isinstance(first.value, BrokerUnavailableError)
        finally:
            close()


def test_a_failure_that_is_not_about_the_broker_does_not_trip_the_breaker() -> None:
    with OwnRedis() as server:
        task, executor, close = target("huey", server.url)
        try:
            with flush_window():
                with pytest.raises(Exception) as unpicklable:
                    executor(airlock.Intent(task, (lambda: None,)))
                assert not isinstance(unpicklable.value, ConnectionError)
                executor(airlock.Intent(task, (1,)))  # still sent
        finally:
            close()


@pytest.mark.parametrize("queue", ["dramatiq", "huey"])
def test_the_timeout_is_set_on_the_redis_connections(queue: str) -> None:
    """The executor's timeout, or a publish_timeout() block's, reaches redis-py, with no retries."""
    with OwnRedis() as server:
        task, _executor, close = target(queue, server.url)
        try:
            pool = task.broker.client.connection_pool if queue == "dramatiq" else task.huey.storage.pool
            reading = 0.0 if queue == "dramatiq" else task.huey.storage.read_timeout
            executor = FACTORIES[queue](timeout=0.7)
            executor(airlock.Intent(task, (1,)))
            assert pool.connection_kwargs["socket_connect_timeout"] == 0.7
            assert pool.connection_kwargs["socket_timeout"] == 0.7 + reading
            assert pool.connection_kwargs["retry"].get_retries() == 0
            with publish_timeout(0.4):
                executor(airlock.Intent(task, (2,)))
            assert pool.connection_kwargs["socket_connect_timeout"] == 0.4
        finally:
            close()


def test_celery_publishes_over_connections_that_carry_the_timeout() -> None:
    from airlock.integrations.executors.celery import _producer_pool

    with OwnRedis() as server:
        task, _executor, close = target("celery", server.url)
        try:
            make_celery_executor(timeout=0.7)(airlock.Intent(task, (1,)))
            pool, _errors = _producer_pool(task.app, 0.7)
            with pool.acquire() as producer:
                connection = producer.connection
                assert connection.connect_timeout == 0.7
                assert connection.transport_options["socket_timeout"] == 0.7
                assert connection.transport_options["max_retries"] == 0
                client = connection.default_channel.client
                assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.7
        finally:
            close()


@pytest.mark.parametrize("factory", list(FACTORIES.values()), ids=list(FACTORIES))
@pytest.mark.parametrize("bad", [0, -1, "2", None, True])
def test_a_timeout_that_is_not_a_positive_number_is_refused(factory: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"timeout=\.\.\.\) takes a timeout in seconds"):
        factory(timeout=bad)
    with pytest.raises(ValueError, match=r"publish_timeout\(\) takes a timeout in seconds"):
        with publish_timeout(bad):
            pass


def test_the_made_executors_keep_the_name_and_carry_their_timeout() -> None:
    from airlock.integrations.executors.celery import celery_executor

    executor = make_celery_executor(timeout=1.5)
    assert executor.__name__ == "celery_executor"
    assert executor.timeout == 1.5  # type: ignore[attr-defined]
    assert make_celery_executor().timeout == DEFAULT_PUBLISH_TIMEOUT  # type: ignore[attr-defined]
    assert executor is not celery_executor


def _send(task: Any, executor: Any, number: int) -> None:
    executor(airlock.Intent(task, (number,)))


def test_the_fault_helper_refuses_an_unknown_fault() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        with fault("celery", "power cut"):
            pass
