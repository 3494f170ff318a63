"""AirlockTask and the migration shim, in-process (eager Celery, no broker)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from celery import Celery
from celery.app.task import Task

import airlock
from airlock import DropAll, Scope
from airlock.integrations.celery import (
    AirlockTask,
    CeleryShimWarning,
    install_shim,
    is_shim_installed,
    shim,
    uninstall_shim,
)
from airlock.integrations.executors.celery import celery_executor
from airlock.testing import capture

app = Celery("airlock_test_eager", set_as_current=False)
app.conf.update(task_always_eager=True, broker_url="memory://")
ran: list[Any] = []


@app.task(name="eager.send_email", shared=False)
def send_email(order_id: int, force: bool = False) -> str:
    ran.append(("send_email", order_id, force))
    return f"sent {order_id}"


@app.task(name="eager.process_order", base=AirlockTask, shared=False)
def process_order(order_id: int, fail: bool = False) -> str:
    airlock.enqueue(send_email, order_id)
    if fail:
        raise ValueError("processing failed")
    return "done"


class MarkedScope(Scope):
    opened: ClassVar[list[MarkedScope]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        MarkedScope.opened.append(self)


@app.task(name="eager.knobs", base=AirlockTask, shared=False, airlock_policy=DropAll(), airlock_scope_cls=MarkedScope)
def with_knobs(order_id: int) -> None:
    airlock.enqueue(send_email, order_id)


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    ran.clear()
    yield
    assert not is_shim_installed(), "a test left the shim installed"


def test_run_flushes_its_intents_after_the_body_succeeds() -> None:
    with capture() as events:
        assert process_order(7) == "done"
    assert [intent.args for intent in events.dispatched] == [(7,)]
    assert events.names.index("scope_flushed") > events.names.index("intent_enqueued")


def test_run_that_raises_discards_its_intents() -> None:
    with capture() as events, pytest.raises(ValueError):
        process_order(7, fail=True)
    assert events.dispatched == []
    assert [intent.args for intent in events.discarded] == [(7,)]


def test_intents_go_through_the_configured_executor() -> None:
    airlock.configure(executor=celery_executor)
    process_order.apply(args=(8,))  # eager: send_email runs through apply_async, in-process
    assert ran == [("send_email", 8, False)]


def test_knobs_choose_the_policy_and_scope_class() -> None:
    MarkedScope.opened.clear()
    with capture() as events:
        with_knobs(3)
    assert [type(scope) for scope in MarkedScope.opened] == [MarkedScope]
    assert events.dispatched == []
    assert [intent.args for intent in events.dropped] == [(3,)]


def test_run_inside_an_outer_scope_hands_its_intents_to_it() -> None:
    with capture() as events:
        with airlock.scope() as outer:
            process_order(9)
            assert [intent.args for intent in outer.intents] == [(9,)]
    assert [intent.args for intent in events.dispatched] == [(9,)]


# -- the shim --------------------------------------------------------------------------


def test_shim_switches_off_to_the_very_same_methods() -> None:
    before = {name: Task.__dict__[name] for name in ("apply_async", "delay", "retry")}
    install_shim()
    install_shim()  # idempotent
    assert all(Task.__dict__[name] is not method for name, method in before.items())
    uninstall_shim()
    assert all(Task.__dict__[name] is method for name, method in before.items())
    with shim():
        with shim():
            assert is_shim_installed()
        assert is_shim_installed()  # the inner block leaves it as it found it
    assert all(Task.__dict__[name] is method for name, method in before.items())


def test_shim_refuses_to_undo_someone_elses_patch() -> None:
    install_shim()
    ours = Task.__dict__["delay"]
    Task.delay = lambda self, *a, **k: None
    try:
        with pytest.raises(RuntimeError, match=r"Task\.delay"):
            uninstall_shim()
    finally:
        Task.delay = ours
        uninstall_shim()


def test_shim_turns_calls_in_a_scope_into_intents_and_says_what_to_write() -> None:
    with shim(), capture() as events, airlock.scope():
        with pytest.warns(CeleryShimWarning) as warned:
            result = send_email.apply_async((7,), {"force": True}, countdown=5, producer=object())
            send_email.delay(8)
        assert ran == []  # nothing ran or was sent yet
    assert str(warned[0].message).endswith(
        "write airlock.enqueue(send_email, 7, force=True, _dispatch_options={'countdown': 5}) instead"
    )
    assert "write airlock.enqueue(send_email, 8) instead" in str(warned[1].message)
    first, second = events.enqueued
    assert first.dispatch_options == {"countdown": 5, "task_id": result.id}  # the live producer is dropped
    assert (first.args, first.kwargs, second.args) == ((7,), {"force": True}, (8,))
    assert result.id


def test_shim_leaves_calls_outside_a_scope_to_celery() -> None:
    with shim():
        result = send_email.delay(4)  # eager: runs at once; and no warning (filterwarnings=error)
    assert result.get() == "sent 4"
    assert ran == [("send_email", 4, False)]


def test_shim_passes_task_keywords_named_like_enqueue_options() -> None:
    @app.task(name="eager.odd", shared=False)
    def odd(_name: str) -> None:
        ran.append(_name)

    with shim(), capture() as events, airlock.scope(), pytest.warns(CeleryShimWarning):
        odd.delay(_name="kept")
    assert events.enqueued[0].kwargs == {"_name": "kept"}


def test_shim_checks_arguments_at_the_call_like_celery() -> None:
    with shim(), airlock.scope(), pytest.raises(TypeError):
        send_email.delay(1, 2, 3, 4)


def test_executor_reaches_the_real_apply_async_while_a_scope_is_active() -> None:
    class LetsGo(Scope):
        def before_descendant_flushes(self, exiting_scope: Scope, intents: list[Any]) -> list[Any]:
            return intents  # dispatch now, while this scope is still active

    with shim(), airlock.scope(_cls=LetsGo) as outer:
        with airlock.scope(executor=celery_executor):
            airlock.enqueue(send_email, 5)
        assert ran == [("send_email", 5, False)]  # no recursion into the shim, no warning
        assert outer.intents == []
