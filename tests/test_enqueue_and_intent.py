"""enqueue() and Intent: bad input, naming, immutability, observability fields."""

from __future__ import annotations

import time

import pytest

import airlock
from airlock import Intent, NoScopeError


def send_email(order_id, force=False):
    return ("sent", order_id, force)


class NamedTask:
    """Stands in for a Celery/Huey task: a callable with a dotted ``name``."""

    name = "shop.tasks.notify_warehouse"

    def __call__(self, *args, **kwargs):
        return args


class HueyLikeWrapper:
    """Stands in for Huey's TaskWrapper: ``name`` is None, the task class carries the name."""

    name = None
    task_class = type("remind", (), {})  # Huey names the generated class after the function

    def __call__(self):
        return None


class Actor:
    """Stands in for a Dramatiq actor: it carries ``actor_name``."""

    actor_name = "rebuild_index"

    def __call__(self):
        return None


def test_enqueue_outside_a_scope_raises_no_scope_error_naming_the_fix():
    with pytest.raises(NoScopeError, match=r"send_email.*airlock\.scope\(\)"):
        airlock.enqueue(send_email, 7)


@pytest.mark.parametrize("bad", ["send_email", None, 42], ids=["str", "none", "int"])
def test_enqueue_non_callable_raises_type_error_naming_what_was_passed(bad):
    with airlock.scope() as scope:
        airlock.enqueue(send_email, 1)
        with pytest.raises(TypeError, match=repr(bad)):
            airlock.enqueue(bad)
        assert len(scope.intents) == 1  # buffer intact


def test_non_callable_is_refused_even_without_a_scope():
    with pytest.raises(TypeError, match="callable"):
        airlock.enqueue("not a task")


def test_bad_dispatch_options_and_name_are_refused():
    with airlock.scope() as scope:
        with pytest.raises(TypeError, match="_dispatch_options"):
            airlock.enqueue(send_email, 1, _dispatch_options=[("countdown", 1)])
        with pytest.raises(TypeError, match="_name"):
            airlock.enqueue(send_email, 1, _name=5)
        assert scope.intents == []


def test_intent_fields():
    with airlock.scope(airlock.DropAll()):
        intent = airlock.enqueue(send_email, 7, force=True, _origin="checkout", _dispatch_options={"countdown": 5})
    assert intent.task is send_email
    assert intent.args == (7,) and isinstance(intent.args, tuple)
    assert intent.kwargs == {"force": True}
    assert intent.origin == "checkout"
    assert intent.dispatch_options == {"countdown": 5}
    assert intent.local_policies == ()
    assert intent.trace_context is None


def test_task_keyword_named_task_reaches_the_task():
    seen = {}

    def job(**kwargs):
        seen.update(kwargs)

    with airlock.scope():
        airlock.enqueue(job, task="t", args="a")
    assert seen == {"task": "t", "args": "a"}


@pytest.mark.parametrize(
    ("task", "kwargs", "expected"),
    [
        (send_email, {}, "send_email"),
        (NamedTask(), {}, "notify_warehouse"),
        (Actor(), {}, "rebuild_index"),
        (HueyLikeWrapper(), {}, "remind"),
        (send_email, {"_name": "custom"}, "custom"),
        (print, {}, "print"),
    ],
    ids=["function", "dotted-name", "actor-name", "huey-task-class", "explicit", "builtin"],
)
def test_intent_name(task, kwargs, expected):
    with airlock.scope(airlock.DropAll()):
        intent = airlock.enqueue(task, **kwargs)
    assert intent.name == expected


def test_str_reads_like_a_call():
    with airlock.scope(airlock.DropAll()):
        intent = airlock.enqueue(send_email, 7, force=True)
    assert str(intent) == "send_email(7, force=True)"
    assert repr(intent) == "Intent(name='send_email', args=(7,), kwargs={'force': True})"


@pytest.mark.parametrize("field", ["task", "args", "kwargs", "origin", "dispatch_options", "name", "id"])
def test_intent_is_immutable(field):
    intent = Intent(send_email, (1,))
    with pytest.raises(AttributeError):
        setattr(intent, field, None)
    with pytest.raises(AttributeError):
        intent.new_attribute = 1


def test_intent_is_unhashable_and_equal_only_to_itself():
    first = Intent(send_email, (1,))
    second = Intent(send_email, (1,))
    with pytest.raises(TypeError):
        hash(first)
    with pytest.raises(TypeError):
        {first}  # noqa: B018
    assert first == first and first != second


def test_intent_constructor_validates_and_normalises():
    with pytest.raises(TypeError, match="callable"):
        Intent("nope")
    intent = Intent(send_email, [1, 2], {"force": True}, name="n", dispatch_options={"queue": "q"})
    assert intent.args == (1, 2) and intent.name == "n" and intent.dispatch_options == {"queue": "q"}


def test_intent_carries_unique_id_and_enqueue_time():
    before = time.time_ns()
    with airlock.scope(airlock.DropAll()):
        intents = [airlock.enqueue(send_email, i) for i in range(100)]
    after = time.time_ns()
    assert len({intent.id for intent in intents}) == 100
    assert all(intent.id == intent.id for intent in intents)
    assert all(before <= intent.enqueued_at_ns <= after for intent in intents)


def test_trace_context_is_captured_at_enqueue_time_when_a_tracer_hooks_in():
    contexts = iter(["ctx-1", "ctx-2"])
    airlock._context.hooks.capture_trace_context = lambda: next(contexts)
    with airlock.scope(airlock.DropAll()):
        first = airlock.enqueue(send_email, 1)
        second = airlock.enqueue(send_email, 2)
    assert (first.trace_context, second.trace_context) == ("ctx-1", "ctx-2")


def test_returned_intent_is_the_buffered_one():
    with airlock.scope(airlock.DropAll()) as scope:
        intent = airlock.enqueue(send_email, 1)
        assert scope.intents[0] is intent


def test_intent_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(Intent(send_email, (1,)))


def test_sync_executor_refuses_async_tasks_instead_of_dropping_them():
    async def async_task():
        return None

    with pytest.raises(TypeError, match="async function"), airlock.scope():
        airlock.enqueue(async_task)
