"""async with, @scoped on async def, and isolation between threads, tasks and greenlets."""

from __future__ import annotations

import asyncio
import threading

import pytest

import airlock
from airlock import DropAll, NoScopeError, _compat


async def test_async_with_flushes_on_success():
    ran = []
    async with airlock.scope() as scope:
        airlock.enqueue(ran.append, 1)
        await asyncio.sleep(0)
    assert ran == [1] and scope.is_flushed


async def test_async_with_discards_on_error():
    ran = []
    with pytest.raises(ValueError):
        async with airlock.scope() as scope:
            airlock.enqueue(ran.append, 1)
            raise ValueError
    assert ran == [] and scope.is_discarded


async def test_scoped_async_function_gets_a_fresh_scope_per_call():
    seen = []

    @airlock.scoped()
    async def handler(n):
        seen.append(airlock.get_current_scope())
        airlock.enqueue(print, n)
        await asyncio.sleep(0)
        return n * 2

    assert handler.__name__ == "handler"
    assert await handler(1) == 2
    assert await handler(2) == 4
    assert seen[0] is not seen[1] and all(s.is_flushed for s in seen)


def test_scoped_sync_function_with_policy_and_bare_form():
    seen = []

    @airlock.scoped(DropAll())
    def dry(n):
        airlock.enqueue(seen.append, n)
        return airlock.get_current_scope()

    @airlock.scoped
    def wet(n):
        airlock.enqueue(seen.append, n)

    scope = dry(1)
    wet(2)
    assert seen == [2] and isinstance(scope.policy, DropAll)


def test_scoped_discards_when_the_function_raises():
    ran = []

    @airlock.scoped()
    def work():
        airlock.enqueue(ran.append, 1)
        raise KeyError

    with pytest.raises(KeyError):
        work()
    assert ran == []


async def test_concurrent_asyncio_tasks_never_see_each_others_scope():
    results = {}

    async def unit(name):
        async with airlock.scope(DropAll()) as scope:
            for i in range(5):
                airlock.enqueue(print, name, i)
                await asyncio.sleep(0)
                assert airlock.get_current_scope() is scope
            results[name] = [intent.args[0] for intent in scope.intents]

    await asyncio.gather(*(unit(f"task-{n}") for n in range(10)))
    assert all(set(args) == {name} and len(args) == 5 for name, args in results.items())


def test_threads_never_see_each_others_scope():
    barrier = threading.Barrier(8)
    results, errors = {}, []

    def unit(name):
        try:
            with airlock.scope(DropAll()) as scope:
                barrier.wait()
                for i in range(50):
                    airlock.enqueue(print, name, i)
                barrier.wait()
                results[name] = {intent.args[0] for intent in scope.intents}
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=unit, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {f"t{n}": {f"t{n}"} for n in range(8)}


def test_a_new_thread_starts_with_no_scope():
    outcome = []

    def worker():
        try:
            airlock.enqueue(print, 1)
        except NoScopeError:
            outcome.append("no scope")

    with airlock.scope(DropAll()):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert outcome == ["no scope"]


def test_gevent_greenlets_never_see_each_others_scope():
    gevent = pytest.importorskip("gevent", reason="gevent is part of the test extra")
    results = {}

    def unit(name):
        with airlock.scope(DropAll()) as scope:
            for i in range(5):
                airlock.enqueue(print, name, i)
                gevent.sleep(0)
                assert airlock.get_current_scope() is scope
            results[name] = {intent.args[0] for intent in scope.intents}

    greenlets = [gevent.spawn(unit, f"g{n}") for n in range(10)]
    gevent.joinall(greenlets, raise_error=True)
    assert results == {f"g{n}": {f"g{n}"} for n in range(10)}


@pytest.mark.parametrize(
    ("version", "warns"),
    [("0.4.15", True), ("0.4.17", False), ("3.0.3", False)],
    ids=["too-old", "first-isolating", "current"],
)
def test_warns_when_greenlet_is_too_old_to_isolate(version, warns):
    if warns:
        with pytest.warns(RuntimeWarning, match=r"greenlet>=0\.4\.17"):
            assert _compat.warn_if_greenlet_shares_context(version) is True
    else:
        assert _compat.warn_if_greenlet_shares_context(version) is False


def test_installed_greenlet_does_not_warn():
    assert _compat.warn_if_greenlet_shares_context() is False


async def test_enqueue_into_a_scope_that_ended_while_a_child_task_ran_is_refused():
    started, release = asyncio.Event(), asyncio.Event()
    outcome = []

    async def child():
        started.set()
        await release.wait()
        try:
            airlock.enqueue(print, "late")
        except airlock.ScopeStateError as error:
            outcome.append(str(error))

    async with airlock.scope(DropAll()):
        task = asyncio.create_task(child())
        await started.wait()
    release.set()
    await task
    assert outcome and "could never be flushed" in outcome[0]
