"""The seeds as written, executors chosen where the intent was enqueued, and airlock-py's behaviours."""

from __future__ import annotations

import logging

import pytest

import airlock
from airlock import (
    AssertNoEffects,
    BlockTasks,
    DropAll,
    LogOnFlush,
    NoScopeError,
    PolicyViolation,
    Scope,
    ScopeStateError,
)
from airlock._intent import with_arguments


def send_email(order_id, **kwargs):
    return f"email {order_id}"


def send_sms(order_id):
    return f"sms {order_id}"


class Recorder:
    """An executor that records what it was handed, under its own name."""

    def __init__(self, name):
        self.name = name
        self.sent = []

    def __call__(self, intent):
        self.sent.append(intent.args)
        return self.name

    def __repr__(self):
        return f"Recorder({self.name})"


# -- who decides how: the scope the intent was enqueued in --------------------------


def test_inner_scope_with_its_own_executor_keeps_it_when_the_outer_flushes():
    outer_way, inner_way = Recorder("outer"), Recorder("inner")
    with airlock.scope(executor=outer_way) as outer:
        airlock.enqueue(send_email, 1)
        with airlock.scope(executor=inner_way):
            airlock.enqueue(send_email, 2)
        assert inner_way.sent == [], "the outer scope decides when: nothing went yet"
        airlock.enqueue(send_email, 3)
    assert outer_way.sent == [(1,), (3,)]
    assert inner_way.sent == [(2,)]
    assert [outer.executor_for(intent) for intent in outer.intents] == [outer_way, inner_way, outer_way]


def test_outer_discard_drops_the_inner_scopes_intents_whatever_their_executor():
    inner_way = Recorder("inner")
    with pytest.raises(RuntimeError), airlock.scope():
        with airlock.scope(executor=inner_way):
            airlock.enqueue(send_email, 2)
        raise RuntimeError("request failed")
    assert inner_way.sent == []


def test_inner_scope_without_an_executor_goes_the_outer_scopes_way():
    outer_way = Recorder("outer")
    with airlock.scope(executor=outer_way), airlock.scope():
        airlock.enqueue(send_email, 1)
    assert outer_way.sent == [(1,)]


def test_a_configured_executor_is_a_default_not_a_choice():
    configured, chosen = Recorder("configured"), Recorder("chosen")
    airlock.configure(executor=configured)
    with airlock.scope(executor=chosen), airlock.scope():  # the library's own scope
        airlock.enqueue(send_email, 1)
    with airlock.scope():
        airlock.enqueue(send_email, 2)
    assert chosen.sent == [(1,)]
    assert configured.sent == [(2,)]


def test_each_level_keeps_its_own_way_through_three_levels():
    top, middle, bottom = Recorder("top"), Recorder("middle"), Recorder("bottom")
    with airlock.scope(executor=top):
        with airlock.scope(executor=middle):
            airlock.enqueue(send_email, "m1")
            with airlock.scope(executor=bottom):
                airlock.enqueue(send_email, "b")
            with airlock.scope():
                airlock.enqueue(send_email, "m2")
        airlock.enqueue(send_email, "t")
    assert (top.sent, middle.sent, bottom.sent) == ([("t",)], [("m1",), ("m2",)], [("b",)])


def test_intents_an_ancestor_lets_go_early_use_their_own_scopes_executor():
    class LetsGo(Scope):
        def before_descendant_flushes(self, exiting_scope, intents):
            return list(intents)

    outer_way, inner_way = Recorder("outer"), Recorder("inner")
    with airlock.scope(executor=outer_way, _cls=LetsGo):
        with airlock.scope(executor=inner_way):
            airlock.enqueue(send_email, 1)
        assert inner_way.sent == [(1,)]
    assert outer_way.sent == []


def test_dispatched_event_reports_the_executor_result_of_the_intents_own_scope():
    results = []
    inner_way = Recorder("inner")

    def on_dispatched(scope, intent, result):
        results.append(result)

    airlock.signals.intent_dispatched.connect(on_dispatched)
    with airlock.scope(executor=Recorder("outer")), airlock.scope(executor=inner_way):
        airlock.enqueue(send_email, 1)
    assert results == ["inner"]


# -- the executor's own check at enqueue ----------------------------------------------


def checked_executor(intent):
    return intent.args


def _refuse_sets(intent):
    for value in intent.args:
        if isinstance(value, set):
            raise TypeError(f"{intent.name}: a set cannot be serialised; pass a list")
    return with_arguments(intent, tuple(list(a) if isinstance(a, list) else a for a in intent.args), intent.kwargs)


checked_executor.check_enqueue = _refuse_sets


def test_executor_check_refuses_at_enqueue_and_leaves_the_buffer_intact():
    with airlock.scope(executor=checked_executor) as scope:
        airlock.enqueue(send_email, 1)
        with pytest.raises(TypeError, match="a set cannot be serialised"):
            airlock.enqueue(send_email, {1, 2})
    assert [intent.args for intent in scope.intents] == [(1,)]


def test_executor_check_can_snapshot_the_arguments():
    items = [1, 2]
    with airlock.scope(executor=checked_executor) as scope:
        intent = airlock.enqueue(send_email, items)
        items.append(3)
    assert intent.args == ([1, 2],)
    assert scope.intents[0] is intent


def test_executor_check_applies_to_inner_scopes_that_inherit_the_executor():
    with airlock.scope(executor=checked_executor), airlock.scope():
        with pytest.raises(TypeError, match="set"):
            airlock.enqueue(send_email, {1})


# -- BlockTasks takes tasks too ---------------------------------------------------------


def test_block_tasks_accepts_the_tasks_themselves():
    sent = Recorder("sync")
    with airlock.scope(BlockTasks([send_sms]), executor=sent):
        airlock.enqueue(send_sms, 1)
        airlock.enqueue(send_email, 2)
    assert sent.sent == [(2,)]
    assert BlockTasks([send_sms, "send_push"]).names == {"send_sms", "send_push"}


@pytest.mark.parametrize("names", [3, [send_sms, 3], send_sms], ids=["int", "int-in-list", "bare-function"])
def test_block_tasks_refuses_what_is_neither_a_name_nor_a_task(names):
    with pytest.raises(TypeError, match="BlockTasks takes"):
        BlockTasks(names)


# -- misspelt airlock keywords ------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "meant"),
    [
        ("_dispatch_option", "_dispatch_options"),
        ("dispatch_options", "_dispatch_options"),
        ("_dispatch_opts", "_dispatch_options"),
        ("_nmae", "_name"),
        ("_orgin", "_origin"),
    ],
)
def test_misspelt_airlock_keyword_is_refused_at_enqueue(keyword, meant):
    with airlock.scope(DropAll()) as scope:
        with pytest.raises(TypeError, match=f"did you mean '{meant}'"):
            airlock.enqueue(send_sms, 1, **{keyword: {"countdown": 5}})
    assert scope.intents == []


def test_a_task_that_declares_the_keyword_gets_it():
    def export(rows, dispatch_options=None, _origin_row=None):
        return rows

    with airlock.scope(DropAll()):
        intent = airlock.enqueue(export, [], dispatch_options={"a": 1})
        other = airlock.enqueue(send_email, 1, _private_flag=True)  # not close to any keyword
    assert intent.kwargs == {"dispatch_options": {"a": 1}}
    assert other.kwargs == {"_private_flag": True}


def test_uppercase_keywords_are_left_alone():
    with airlock.scope(DropAll()):
        intent = airlock.enqueue(send_email, 1, Subject="hi")
    assert intent.kwargs == {"Subject": "hi"}


@pytest.mark.parametrize(
    "make",
    [lambda: airlock.scope(executer=print), lambda: Scope(executer=print)],
    ids=["scope()", "Scope()"],
)
def test_unknown_scope_keyword_says_did_you_mean(make):
    with pytest.raises(TypeError, match="did you mean 'executor'"):
        make()


# -- airlock-py's behaviours ------------------------------------------------------------------


def test_buffers_stay_readable_after_the_block_whether_it_flushed_or_discarded():
    with airlock.scope(policy=DropAll()) as dry:
        airlock.enqueue(send_email, 1)
        airlock.enqueue(send_sms, 2)
    assert len(dry.intents) == 2

    with pytest.raises(RuntimeError), airlock.scope() as failed:
        airlock.enqueue(send_email, 3)
        raise RuntimeError
    assert [intent.args for intent in failed.intents] == [(3,)]

    with airlock.scope(DropAll()) as outer:
        with airlock.scope() as inner:
            airlock.enqueue(send_email, 4)
        airlock.enqueue(send_sms, 5)
    assert [intent.args for intent in inner.intents] == [(4,)]
    assert [intent.args for intent in outer.own_intents] == [(5,)]
    assert [intent.args for intent in outer.captured_intents] == [(4,)]


class DjangoLikeTask:
    """Like a Django 6 Task: not callable, has .enqueue and .call."""

    name = "send_report"

    def __init__(self):
        self.calls = []

    def enqueue(self, *args, **kwargs):
        raise AssertionError("the sync executor runs it in-process")

    def call(self, *args, **kwargs):
        self.calls.append(args)
        return "ran"


def test_task_objects_that_are_not_callable_are_accepted():
    task = DjangoLikeTask()
    with airlock.scope() as scope:
        intent = airlock.enqueue(task, 7)
    assert intent.name == "send_report"
    assert task.calls == [(7,)]
    assert scope.is_flushed
    assert airlock.Intent(task, (1,)).task is task


def test_the_sync_executor_refuses_a_task_object_it_cannot_run():
    class OnlyDelay:
        name = "remote"

        def delay(self, *args):
            raise AssertionError

    with pytest.raises(TypeError, match="cannot be called in this process"), airlock.scope():
        airlock.enqueue(OnlyDelay())


def test_other_objects_are_still_refused_at_enqueue():
    with airlock.scope(), pytest.raises(TypeError, match="needs a callable task"):
        airlock.enqueue(object())


@pytest.mark.parametrize("step", ["flush", "discard"])
def test_flush_or_discard_of_a_scope_never_entered_is_a_noop_that_settles_it(step):
    scope = Scope()
    assert getattr(scope, step)() == []
    assert scope.state == ("flushed" if step == "flush" else "discarded")
    with pytest.raises(ScopeStateError, match="already been"):
        scope.flush()


def test_airlock_py_error_phrases():
    with pytest.raises(NoScopeError, match=r"without an active airlock\.scope\(\)"):
        airlock.enqueue(send_email, 1)
    scope = Scope().enter()
    with pytest.raises(ScopeStateError, match="already active"):
        scope.enter()
    scope.exit()
    with pytest.raises(ScopeStateError, match="not active"):
        scope.exit()
    scope.flush()
    with pytest.raises(ScopeStateError, match="already been flushed"):
        scope.flush()
    other = Scope()
    other.discard()
    with pytest.raises(ScopeStateError, match="already been discarded"):
        other.discard()
    with pytest.raises(PolicyViolation, match="Unexpected side effect"), airlock.scope(AssertNoEffects()):
        airlock.enqueue(send_email, 1)


def test_policy_and_intent_reprs():
    intent = airlock.Intent(
        send_email, (123,), {"urgent": True}, origin="models:save", dispatch_options={"countdown": 30}
    )
    assert AssertNoEffects().allows(intent) is False
    assert "audit" in repr(LogOnFlush(logging.getLogger("audit")))
    text = repr(intent)
    for part in ("send_email", "(123,)", "'urgent': True", "dispatch_options={'countdown': 30}", "models:save"):
        assert part in text
    assert "dispatch_options" not in repr(airlock.Intent(send_email, (1,)))
    assert str(intent) == "send_email(123, urgent=True)"


def test_custom_scope_class_with_keyword_only_init():
    made = []

    class Custom(Scope):
        def __init__(self, *, policy=None, executor=None, **kw):
            made.append((policy, executor, kw))
            super().__init__(policy, executor)

    way = Recorder("way")
    airlock.configure(scope_cls=Custom, scope_kwargs={})
    with airlock.scope(DropAll(), executor=way):
        pass
    with airlock.scope(_cls=Custom):
        pass
    assert [type(policy).__name__ for policy, _, _ in made] == ["DropAll", "NoneType"]
    assert made[0][1] is way
