"""The Celery examples of the user documents run exactly as written, against Redis and a worker.

The code blocks below are copied verbatim from the user documents "How Dispatch
Works" (its Celery Executor example) and "Celery Integration". The test supplies
what they leave to the reader (the helper functions and tasks they mention),
runs them, and checks what reached the broker and the worker.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import celery._state
import pytest
import redis
from celery import Celery, current_task

import airlock
from airlock.integrations.executors.celery import celery_executor
from airlock.signals import intent_dispatched
from airlock.testing import capture
from tests.celery_support import DEFAULT_QUEUE, JOURNAL, REDIS_URL, configure_app, redis_depth, redis_keys, serving

DISPATCH_CELERY_EXECUTOR = """
with airlock.scope(executor=celery_executor):
    airlock.enqueue(celery_task, ...)    # Dispatches via .delay()
    airlock.enqueue(plain_function, ...) # Falls back to sync
"""

QUICKSTART = """
from celery import Celery, current_task
from airlock.integrations.celery import AirlockTask
import airlock

app = Celery('myapp')

@app.task(base=AirlockTask)
def process_order(order_id):
    order = fetch_order(order_id)
    order.status = "processed"
    save_order(order)

    # These are buffered within the task's scope
    airlock.enqueue(send_email, order_id=order_id)
    airlock.enqueue(update_analytics, order_id=order_id)
    # Flushes when task completes successfully
    # Discards if task raises exception
"""

DISPATCH_VIA_CELERY = """
from airlock.integrations.executors.celery import celery_executor
from airlock.signals import intent_dispatched

with airlock.scope(executor=celery_executor):
    airlock.enqueue(send_email, user_id=123)
    airlock.enqueue(process_data, item_id=456)
# Dispatches via .delay()
"""

COMBINING_BOTH = """
@app.task(base=AirlockTask)
def process_order(order_id):
    # This task runs in a scope
    order = fetch_order(order_id)
    save_order(order)

    # Dispatch follow-up task via Celery
    airlock.enqueue(send_email, order_id=order_id)

# Trigger it
with airlock.scope(executor=celery_executor):
    airlock.enqueue(process_order, order_id=123)
# process_order.delay(order_id=123) is called
# When it runs, send_email is also queued via Celery
"""

PASS_CELERY_OPTIONS = """
airlock.enqueue(
    send_email,
    user_id=123,
    _dispatch_options={
        "countdown": 60,      # Delay 60 seconds
        "queue": "emails",    # Use specific queue
        "priority": 9,        # High priority
    }
)
"""

DJANGO_SETTINGS = """
AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.celery.celery_executor",
}
"""

saved: list[Any] = []


def fetch_order(order_id: int) -> SimpleNamespace:
    return SimpleNamespace(id=order_id, status="new")


def save_order(order: SimpleNamespace) -> None:
    saved.append((order.id, order.status))


def plain_function(*args: Any, **kwargs: Any) -> None:
    JOURNAL.add(kind="seed", token="plain_function", args=args, kwargs=kwargs)


def recording_task(app: Celery, name: str) -> Any:
    def run(*args: Any, **kwargs: Any) -> None:
        request = current_task.request
        JOURNAL.add(
            kind="seed", token=name, args=args, kwargs=kwargs, at=time.time(), id=request.id, parent=request.parent_id
        )

    run.__name__ = run.__qualname__ = name
    return app.task(name=f"airlock_seed.{name}", shared=False)(run)


def run_block(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(textwrap.dedent(code), f"<{namespace['__name__']}>", "exec"), namespace)


@pytest.fixture
def current_app_restored() -> Iterator[None]:
    # The quickstart's Celery('myapp') makes itself the current app, as Celery apps do.
    previous = getattr(celery._state._tls, "current_app", None)
    yield
    celery._state._set_current_app(previous)


def test_quickstart_task_flushes_its_intents_when_it_completes(current_app_restored: None) -> None:
    namespace = {
        "__name__": "seed_quickstart",
        "fetch_order": fetch_order,
        "save_order": save_order,
        "send_email": plain_function,
        "update_analytics": plain_function,
    }
    run_block(QUICKSTART, namespace)
    saved.clear()
    with capture() as events:
        namespace["process_order"](41)
    assert saved == [(41, "processed")]
    assert [(intent.name, intent.kwargs) for intent in events.dispatched] == [
        ("plain_function", {"order_id": 41}),
        ("plain_function", {"order_id": 41}),
    ]


def test_celery_examples_run_as_written_against_redis_and_a_worker(redis_url: str) -> None:
    app = Celery("airlock_seeds", set_as_current=False)
    configure_app(app, "redis")
    namespace: dict[str, Any] = {
        "__name__": "seed_celery",
        "airlock": airlock,
        "app": app,
        "celery_executor": celery_executor,
        "fetch_order": fetch_order,
        "save_order": save_order,
        "plain_function": plain_function,
    }
    from airlock.integrations.celery import AirlockTask

    namespace["AirlockTask"] = AirlockTask
    for name in ("celery_task", "send_email", "process_data", "update_analytics"):
        namespace[name] = recording_task(app, name)
    # Nothing is configured: each example chooses its executor as written, and
    # process_order's run (an AirlockTask) defaults to its own queue, Celery.
    sent: list[tuple[str, Any]] = []
    intent_dispatched.connect(lambda scope, intent, result: sent.append((intent.name, result)), weak=False)
    emails = redis_keys("emails")
    try:
        run_block(DISPATCH_CELERY_EXECUTOR, namespace)
        assert [entry["args"] for entry in JOURNAL.of("plain_function", "seed")][-1] == (...,)
        run_block(DISPATCH_VIA_CELERY, namespace)
        run_block(COMBINING_BOTH, namespace)
        with airlock.scope(executor=celery_executor):
            run_block(PASS_CELERY_OPTIONS, namespace)
        # The options example waits in its own queue, at priority 9, for 60 seconds.
        assert redis_depth("emails") == 1
        client = redis.Redis.from_url(REDIS_URL)
        (message,) = client.lrange(emails[-1], 0, -1)
        client.close()
        assert json.loads(message)["properties"]["priority"] == 9
        assert json.loads(message)["headers"]["eta"]

        with serving(app, [DEFAULT_QUEUE]):
            assert JOURNAL.wait_for("celery_task", 1, "seed")[0]["args"] == (...,)
            assert JOURNAL.wait_for("process_data", 1, "seed")[0]["kwargs"] == {"item_id": 456}
            # send_email: once from the example, once from process_order's run.
            sends = JOURNAL.wait_for("send_email", 2, "seed")
            assert sorted(str(entry["kwargs"]) for entry in sends) == ["{'order_id': 123}", "{'user_id': 123}"]
        # "When it runs, send_email is also queued via Celery": its own message, with
        # its own task id, published by process_order's run on the worker.
        (order,) = [result for name, result in sent if name == "process_order"]
        (follow_up,) = [entry for entry in sends if entry["kwargs"] == {"order_id": 123}]
        published = {result.id for name, result in sent if name == "send_email"}
        assert follow_up["id"] in published
        assert follow_up["id"] not in (None, order.id)
        assert follow_up["parent"] == order.id
        assert redis_depth("emails") == 1  # nobody consumed the "emails" queue

        settings: dict[str, Any] = {}
        exec(DJANGO_SETTINGS, settings)
        from django.utils.module_loading import import_string

        assert import_string(settings["AIRLOCK"]["EXECUTOR"]) is celery_executor
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(*emails, *redis_keys(DEFAULT_QUEUE))
        client.close()


def test_the_worked_example_of_the_celery_docs_publishes_both_messages(
    redis_url: str, current_app_restored: None
) -> None:
    text = (Path(__file__).parents[1] / "docs" / "celery.md").read_text()
    example = text.split("## A worked example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "docs_celery_worked_example"}
    _delete_docs_queues()
    try:
        run_block(example, namespace)
        with namespace["app"].connection_for_write() as connection:
            channel = connection.default_channel
            sizes = {
                q: channel.queue_declare(f"airlock-docs-{q}", passive=True).message_count for q in ("shop", "mail")
            }
        assert sizes == {"shop": 1, "mail": 1}
    finally:
        _delete_docs_queues()


def _delete_docs_queues() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key for pattern in ("airlock-docs-*", "_kombu.binding.airlock-docs-*") for key in client.keys(pattern)]
        if keys:
            client.delete(*keys)
    finally:
        client.close()
