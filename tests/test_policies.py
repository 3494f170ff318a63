"""Built-in policies, local policies, and the rules that policies only judge."""

from __future__ import annotations

import logging

import pytest

import airlock
from airlock import (
    AllowAll,
    AssertNoEffects,
    BlockTasks,
    DropAll,
    LogOnFlush,
    Policy,
    PolicyEnqueueError,
    PolicyViolation,
)
from airlock.testing import capture


def send_email(n=0):
    return n


def charge_card(n=0):
    return n


def names(intents):
    return [intent.name for intent in intents]


@pytest.mark.parametrize(
    "policy",
    [AllowAll(), DropAll(), AssertNoEffects(), BlockTasks({"x"}), LogOnFlush()],
    ids=["allow", "drop", "assert", "block", "log"],
)
def test_builtins_satisfy_the_policy_protocol(policy):
    assert isinstance(policy, Policy)


def test_allow_all_dispatches_everything():
    with airlock.scope(AllowAll()) as scope:
        airlock.enqueue(send_email)
        airlock.enqueue(charge_card)
    assert scope.is_flushed


def test_drop_all_dispatches_nothing_and_reports_each_drop():
    ran = []
    with capture(dispatch=True) as captured, airlock.scope(DropAll()) as scope:
        airlock.enqueue(ran.append, 1)
        airlock.enqueue(ran.append, 2)
    assert ran == []
    assert scope.is_flushed
    dropped = captured.of("intent_dropped")
    assert [e.kwargs["intent"].args for e in dropped] == [(1,), (2,)]
    assert all(isinstance(e.kwargs["policy"], DropAll) for e in dropped)


def test_assert_no_effects_raises_at_enqueue_and_buffers_nothing():
    with airlock.scope(AssertNoEffects()) as scope:
        with pytest.raises(PolicyViolation, match=r"send_email\(1\)"):
            airlock.enqueue(send_email, 1)
        assert scope.intents == []


def test_block_tasks_drops_named_tasks_at_flush():
    with capture() as captured, airlock.scope(BlockTasks({"send_email"})):
        airlock.enqueue(send_email)
        airlock.enqueue(charge_card)
    assert names(captured.dispatched) == ["charge_card"]
    assert names(captured.dropped) == ["send_email"]


def test_block_tasks_can_raise_on_enqueue():
    with airlock.scope(BlockTasks(["send_email"], raise_on_enqueue=True)) as scope:
        with pytest.raises(PolicyViolation, match="send_email"):
            airlock.enqueue(send_email)
        airlock.enqueue(charge_card)
        assert names(scope.intents) == ["charge_card"]


def test_block_tasks_refuses_a_bare_string():
    with pytest.raises(TypeError, match=r"BlockTasks\(\{'send_email'\}\)"):
        BlockTasks("send_email")


def test_log_on_flush_logs_each_intent(caplog):
    logger = logging.getLogger("test.airlock.flush")
    with caplog.at_level(logging.INFO, logger="test.airlock.flush"), airlock.scope(LogOnFlush(logger)):
        airlock.enqueue(send_email, 3)
    assert [r.getMessage() for r in caplog.records] == ["airlock: flushing send_email(3)"]


def test_local_policy_is_attached_and_judged_at_flush_before_the_scope_policy():
    order = []

    class Recording:
        def __init__(self, label, allow=True):
            self.label, self.allow = label, allow

        def on_enqueue(self, intent):
            order.append(("enqueue", self.label))

        def allows(self, intent):
            order.append(("allows", self.label))
            return self.allow

    outer_local, inner_local, scope_policy = Recording("outer"), Recording("inner"), Recording("scope")
    with capture() as captured, airlock.scope(scope_policy) as scope:
        with airlock.policy(outer_local), airlock.policy(inner_local):
            intent = airlock.enqueue(send_email)
        plain = airlock.enqueue(charge_card)
        assert intent.local_policies == (inner_local, outer_local)
        assert plain.local_policies == ()
    assert scope.is_flushed
    assert order == [
        ("enqueue", "inner"),
        ("enqueue", "outer"),
        ("enqueue", "scope"),
        ("enqueue", "scope"),
        ("allows", "inner"),
        ("allows", "outer"),
        ("allows", "scope"),
        ("allows", "scope"),
    ]
    assert names(captured.dispatched) == ["send_email", "charge_card"]


def test_local_drop_policy_drops_only_what_was_enqueued_inside_it():
    with capture() as captured, airlock.scope():
        with airlock.policy(DropAll()):
            airlock.enqueue(send_email)
        airlock.enqueue(charge_card)
    assert names(captured.dispatched) == ["charge_card"]
    assert names(captured.dropped) == ["send_email"]
    assert isinstance(captured.of("intent_dropped")[0].kwargs["policy"], DropAll)


def test_local_policy_opens_no_buffer():
    with airlock.scope() as scope:
        with airlock.policy(AllowAll()):
            assert airlock.get_current_scope() is scope
            airlock.enqueue(send_email)
        assert len(scope.intents) == 1
        scope_intents = scope.intents
    assert scope_intents[0].local_policies


def test_local_assert_no_effects_raises_at_enqueue():
    with airlock.scope() as scope, airlock.policy(AssertNoEffects()):
        with pytest.raises(PolicyViolation):
            airlock.enqueue(send_email)
        assert scope.intents == []


class Enqueuing:
    def __init__(self, when):
        self.when = when

    def on_enqueue(self, intent):
        if self.when == "enqueue":
            airlock.enqueue(charge_card)

    def allows(self, intent):
        if self.when == "flush":
            airlock.enqueue(charge_card)
        return True


def test_policy_that_enqueues_at_enqueue_time_is_refused():
    with airlock.scope(Enqueuing("enqueue")) as scope:
        with pytest.raises(PolicyEnqueueError, match="policies judge intents"):
            airlock.enqueue(send_email)
        assert scope.intents == []
        assert airlock.get_current_scope() is scope


def test_policy_that_enqueues_at_flush_is_refused_and_the_scope_discarded():
    discarded = []
    scope = airlock.scope(Enqueuing("flush")).enter()
    intent = airlock.enqueue(send_email)
    scope.exit()
    with airlock.signals.scope_discarded.connected_to(lambda sender, **kw: discarded.append(kw)):
        with pytest.raises(PolicyEnqueueError):
            scope.flush()
    assert scope.intents == [intent] and scope.state == "discarded"
    assert discarded[0]["intents"] == [intent] and type(discarded[0]["error"]) is PolicyEnqueueError


def test_local_policy_that_enqueues_is_refused():
    with airlock.scope() as scope, airlock.policy(Enqueuing("enqueue")):
        with pytest.raises(PolicyEnqueueError):
            airlock.enqueue(send_email)
        assert scope.intents == []


def test_policy_rejects_non_policies():
    with pytest.raises(TypeError, match="on_enqueue"):
        airlock.policy("DropAll")
    with pytest.raises(TypeError, match=r"write DropAll\(\)"):
        airlock.policy(DropAll)


def test_outer_scope_policy_judges_captured_intents():
    with capture() as captured, airlock.scope(BlockTasks({"send_email"})):
        with airlock.scope():
            airlock.enqueue(send_email)
            airlock.enqueue(charge_card)
    assert names(captured.dispatched) == ["charge_card"]
    assert names(captured.dropped) == ["send_email"]


def test_inner_scope_policy_drops_before_capture():
    with capture() as captured, airlock.scope() as outer:
        with airlock.scope(DropAll()):
            airlock.enqueue(send_email)
        assert outer.captured_intents == []
    assert names(captured.dropped) == ["send_email"] and captured.dispatched == []


def test_passes_local_policies():
    with airlock.scope(DropAll()):
        with airlock.policy(BlockTasks({"send_email"})):
            blocked = airlock.enqueue(send_email)
            allowed = airlock.enqueue(charge_card)
    assert not blocked.passes_local_policies()
    assert allowed.passes_local_policies()
