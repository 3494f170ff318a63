"""Scope life: enter/exit/flush/discard, state errors, nesting and capture."""

from __future__ import annotations

import pytest

import airlock
from airlock import Scope, ScopeStateError


def record(calls):
    def task(*args, **kwargs):
        calls.append((args, kwargs))

    return task


def test_with_block_flushes_in_enqueue_order():
    calls = []
    task = record(calls)
    with airlock.scope() as scope:
        for i in range(5):
            airlock.enqueue(task, i)
    assert [args for args, _ in calls] == [(i,) for i in range(5)]
    assert scope.is_flushed and not scope.is_active


def test_exception_discards_and_propagates():
    calls = []
    with pytest.raises(ValueError), airlock.scope() as scope:
        airlock.enqueue(record(calls), 1)
        raise ValueError("boom")
    assert calls == []
    assert scope.is_discarded


def test_flush_returns_dispatched_and_discard_returns_dropped():
    calls = []
    scope = Scope()
    scope.enter()
    first = airlock.enqueue(record(calls), 1)
    second = airlock.enqueue(record(calls), 2)
    scope.exit()
    assert scope.flush() == [first, second]

    other = Scope()
    other.enter()
    dropped = airlock.enqueue(record(calls), 3)
    other.exit()
    assert other.discard() == [dropped]
    assert [args for args, _ in calls] == [(1,), (2,)]


def test_enter_sets_current_and_exit_restores_parent():
    outer = Scope().enter()
    inner = Scope().enter()
    assert airlock.get_current_scope() is inner
    assert inner.parent is outer
    inner.exit()
    assert airlock.get_current_scope() is outer
    outer.exit()
    assert airlock.get_current_scope() is None
    inner.discard()
    outer.discard()


@pytest.mark.parametrize(
    ("prepare", "step", "message"),
    [
        (lambda s: s.enter(), "flush", "still active"),
        (lambda s: (s.enter(), s.exit(), s.flush()), "flush", "already been flushed"),
        (lambda s: (s.enter(), s.exit(), s.discard()), "flush", "already been discarded"),
        (lambda s: (s.enter(), s.exit(), s.flush()), "discard", "already been flushed"),
        (lambda s: s.enter(), "discard", "still active"),
    ],
    ids=["active", "flush-twice", "flush-after-discard", "discard-after-flush", "discard-active"],
)
def test_illegal_steps_raise_scope_state_error(prepare, step, message):
    scope = Scope()
    prepare(scope)
    with pytest.raises(ScopeStateError, match=message):
        getattr(scope, step)()
    if scope.is_active:
        scope.exit()
        scope.discard()


def test_flushing_an_active_scope_keeps_its_buffer():
    calls = []
    scope = Scope().enter()
    airlock.enqueue(record(calls), 1)
    with pytest.raises(ScopeStateError):
        scope.flush()
    assert len(scope.intents) == 1
    scope.exit()
    assert len(scope.flush()) == 1
    assert calls == [((1,), {})]


def test_enter_twice_and_exit_twice_are_errors():
    scope = Scope().enter()
    with pytest.raises(ScopeStateError, match="already active"):
        scope.enter()
    scope.exit()
    with pytest.raises(ScopeStateError, match="not active"):
        scope.exit()
    scope.discard()


def test_exiting_out_of_order_is_an_error():
    outer = Scope().enter()
    inner = Scope().enter()
    with pytest.raises(ScopeStateError, match="not the current scope"):
        outer.exit()
    inner.exit()
    outer.exit()
    inner.discard()
    outer.discard()


def test_enqueue_into_an_exited_scope_is_refused():
    scope = Scope().enter()
    scope.exit()
    token = airlock._context.current.set(scope)
    try:
        with pytest.raises(ScopeStateError, match="could never be flushed"):
            airlock.enqueue(print, 1)
    finally:
        airlock._context.current.reset(token)
    assert scope.intents == []
    scope.discard()


def test_introspection_reports_state_and_copies():
    scope = Scope()
    assert scope.state == "created" and not scope.is_active
    scope.enter()
    intent = airlock.enqueue(print, "x")
    assert scope.is_active and scope.state == "active"
    copy = scope.intents
    copy.clear()
    assert scope.intents == [intent]
    assert scope.own_intents == [intent] and scope.captured_intents == []
    assert scope.id == scope.id and scope.id != Scope().id
    scope.exit()
    scope.discard()


# -- nesting -------------------------------------------------------------------


def test_inner_scope_flush_is_captured_by_outer_and_dispatched_at_outer_flush():
    calls = []
    task = record(calls)
    with airlock.scope() as outer:
        airlock.enqueue(task, "outer-1")
        with airlock.scope() as inner:
            airlock.enqueue(task, "inner")
        assert calls == []
        assert inner.is_flushed
        assert [i.args for i in outer.captured_intents] == [("inner",)]
        assert [i.args for i in outer.own_intents] == [("outer-1",)]
        airlock.enqueue(task, "outer-2")
    assert [args for args, _ in calls] == [("outer-1",), ("inner",), ("outer-2",)]


def test_inner_flush_returns_nothing_when_everything_is_captured():
    with airlock.scope():
        with airlock.scope() as inner:
            airlock.enqueue(print, 1)
        assert inner.is_flushed
    # the outer scope dispatched it; the inner handed nothing to an executor itself


def test_outer_discard_drops_captured_intents():
    calls = []
    with pytest.raises(RuntimeError), airlock.scope():
        with airlock.scope():
            airlock.enqueue(record(calls), 1)
        raise RuntimeError
    assert calls == []


def test_discarding_inner_scope_drops_only_its_own_intents():
    calls = []
    task = record(calls)
    with airlock.scope():
        airlock.enqueue(task, "kept")
        with pytest.raises(KeyError), airlock.scope():
            airlock.enqueue(task, "dropped")
            raise KeyError
    assert calls == [(("kept",), {})]


class PassThrough(Scope):
    """A scope that lets descendants' intents named 'urgent' go out at once."""

    def before_descendant_flushes(self, exiting_scope, intents):
        return [i for i in intents if i.name == "urgent"]


def urgent(calls):
    def urgent(x):
        calls.append(x)

    return urgent


def test_before_descendant_flushes_lets_chosen_intents_go_now():
    calls = []
    go_now = urgent(calls)
    later = record(calls)
    with airlock.scope(_cls=PassThrough) as outer:
        with airlock.scope() as inner:
            airlock.enqueue(go_now, "now")
            airlock.enqueue(later, "later")
        assert calls == ["now"]
        assert [i.args for i in outer.captured_intents] == [("later",)]
        assert inner.is_flushed
    assert calls == ["now", (("later",), {})]


def test_each_active_ancestor_is_asked_nearest_first_and_outermost_has_final_word():
    asked = []

    class Asking(Scope):
        def before_descendant_flushes(self, exiting_scope, intents):
            asked.append(self)
            return list(intents)

    calls = []
    outermost = Scope().enter()
    middle = Asking().enter()
    inner = Asking().enter()
    airlock.enqueue(record(calls), 1)
    inner.exit()
    inner.flush()
    assert asked == [middle]  # outermost is a plain Scope: it captures
    assert calls == []
    assert len(outermost.captured_intents) == 1
    middle.exit()
    middle.flush()
    outermost.exit()
    outermost.flush()
    assert calls == [((1,), {})]


@pytest.mark.parametrize("bad", [None, (), "all", set()], ids=["none", "tuple", "str", "set"])
def test_before_descendant_flushes_must_return_a_list(bad):
    class Broken(Scope):
        def before_descendant_flushes(self, exiting_scope, intents):
            return bad

    outer = Broken().enter()
    inner = Scope().enter()
    intent = airlock.enqueue(print, 1)
    inner.exit()
    with pytest.raises(TypeError, match="must return a list"):
        inner.flush()
    # nothing moved and nothing is left in limbo: the inner scope was discarded
    assert inner.intents == [intent]
    assert outer.intents == []
    assert inner.state == "discarded"
    outer.exit()
    outer.discard()


def test_before_descendant_flushes_cannot_invent_intents():
    class Inventive(Scope):
        def before_descendant_flushes(self, exiting_scope, intents):
            return [airlock.Intent(print, ("x",))]

    outer = Inventive().enter()
    inner = Scope().enter()
    airlock.enqueue(print, 1)
    inner.exit()
    with pytest.raises(ValueError, match="not offered"):
        inner.flush()
    assert inner.is_discarded
    outer.exit()
    outer.discard()


def test_captured_intents_keep_enqueue_order_when_captured_late():
    calls = []
    task = record(calls)
    outer = Scope().enter()
    airlock.enqueue(task, 1)
    inner = Scope().enter()
    airlock.enqueue(task, 2)
    inner.exit()
    airlock.enqueue(task, 3)  # enqueued before the inner scope flushes
    inner.flush()
    outer.exit()
    outer.flush()
    assert [args for args, _ in calls] == [(1,), (2,), (3,)]


def test_deep_nesting_dispatches_everything_once_at_the_outermost():
    calls = []
    task = record(calls)
    scopes = []
    for level in range(8):
        scopes.append(Scope().enter())
        airlock.enqueue(task, level)
    for scope in reversed(scopes[1:]):
        scope.exit()
        assert scope.flush() == []
    assert calls == []
    scopes[0].exit()
    assert len(scopes[0].flush()) == 8
    assert [args for args, _ in calls] == [(level,) for level in range(8)]


def test_exited_ancestor_is_skipped():
    calls = []
    outer = Scope().enter()
    inner = Scope().enter()
    airlock.enqueue(record(calls), 1)
    inner.exit()
    outer.exit()
    outer.flush()
    assert [i.args for i in inner.flush()] == [(1,)]  # no active ancestor: it dispatches
    assert calls == [((1,), {})]


def test_should_flush_override_decides():
    class FlushOnLookupError(Scope):
        def should_flush(self, error):
            return error is None or isinstance(error, LookupError)

    calls = []
    with pytest.raises(KeyError), airlock.scope(_cls=FlushOnLookupError):
        airlock.enqueue(record(calls), 1)
        raise KeyError
    assert calls == [((1,), {})]


def test_schedule_dispatch_override_controls_when():
    later = []

    class Deferred(Scope):
        def schedule_dispatch(self, intents):
            later.append(lambda: self._release(intents))

    calls = []
    with airlock.scope(_cls=Deferred) as scope:
        airlock.enqueue(record(calls), 1)
    assert scope.is_flushed and calls == []
    later[0]()
    assert calls == [((1,), {})]


def test_a_failing_task_does_not_stop_the_others_and_the_error_surfaces():
    calls = []

    def fails(n):
        raise ValueError(f"task {n} failed")

    with pytest.raises(airlock.DispatchError, match="task 1 failed") as caught, airlock.scope():
        first = airlock.enqueue(fails, 1)
        airlock.enqueue(record(calls), 2)
        third = airlock.enqueue(fails, 3)
    assert calls == [((2,), {})]
    error = caught.value
    assert [(intent, str(reason)) for intent, reason in error.failures] == [
        (first, "task 1 failed"),
        (third, "task 3 failed"),
    ]
    assert "2 intent(s)" in str(error) and "fails(3): ValueError: task 3 failed" in str(error)
    assert isinstance(error, ValueError), "code that caught the executor's error still catches it"
    assert error.__cause__ is error.failures[0][1]


def test_scope_rejects_bad_policy_and_executor():
    with pytest.raises(TypeError, match="policy instance"):
        Scope(airlock.AllowAll)
    with pytest.raises(TypeError, match="on_enqueue"):
        Scope(object())
    with pytest.raises(TypeError, match="executor"):
        Scope(executor="celery")
