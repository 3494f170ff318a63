"""configure(), reset_configuration(), get_configuration() and precedence."""

from __future__ import annotations

import pytest

import airlock
from airlock import AllowAll, DropAll, Scope


def executor_a(intent):
    return "a"


def executor_b(intent):
    return "b"


class TenantScope(Scope):
    def __init__(self, policy=None, executor=None, *, tenant="default"):
        super().__init__(policy, executor)
        self.tenant = tenant


def test_defaults_come_from_configure():
    policy = DropAll()
    airlock.configure(policy=policy, executor=executor_a, scope_cls=TenantScope, scope_kwargs={"tenant": "acme"})
    scope = airlock.scope()
    assert isinstance(scope, TenantScope)
    assert scope.policy is policy and scope.executor is executor_a and scope.tenant == "acme"


def test_explicit_arguments_win():
    airlock.configure(policy=DropAll(), executor=executor_a, scope_cls=TenantScope, scope_kwargs={"tenant": "acme"})
    allow = AllowAll()
    scope = airlock.scope(allow, executor=executor_b, tenant="other")
    assert scope.policy is allow and scope.executor is executor_b and scope.tenant == "other"


def test_scope_kwargs_apply_only_to_the_configured_class():
    airlock.configure(scope_cls=TenantScope, scope_kwargs={"tenant": "acme"})
    scope = airlock.scope(_cls=Scope)
    assert type(scope) is Scope


def test_configure_keeps_what_is_not_given():
    airlock.configure(executor=executor_a)
    airlock.configure(policy=DropAll())
    assert airlock.get_configuration()["executor"] is executor_a


def test_scoped_uses_configured_defaults():
    airlock.configure(executor=executor_a)
    seen = []

    @airlock.scoped()
    def work():
        seen.append(airlock.get_current_scope().executor)

    work()
    assert seen == [executor_a]


def test_get_configuration_returns_a_copy():
    airlock.configure(scope_kwargs={"tenant": "acme"})
    config = airlock.get_configuration()
    config["scope_kwargs"]["tenant"] = "changed"
    config["executor"] = executor_b
    assert airlock.get_configuration()["scope_kwargs"] == {"tenant": "acme"}
    assert airlock.get_configuration()["executor"] is None


def test_reset_configuration_forgets_everything():
    airlock.configure(policy=DropAll(), executor=executor_a, scope_cls=TenantScope, scope_kwargs={"tenant": "x"})
    airlock.reset_configuration()
    assert airlock.get_configuration() == {
        "scope_cls": None,
        "policy": None,
        "executor": None,
        "scope_kwargs": {},
        "dispatch_errors": None,
    }
    assert type(airlock.scope()) is Scope


def test_unknown_keyword_names_the_valid_ones_and_suggests():
    expected = r"'polcy' \(did you mean 'policy'\?\).*scope_cls, policy, executor, scope_kwargs"
    with pytest.raises(TypeError, match=expected):
        airlock.configure(polcy=DropAll())
    assert airlock.get_configuration()["policy"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope_cls": dict}, "subclass of airlock.Scope"),
        ({"policy": "DropAll"}, "on_enqueue"),
        ({"executor": "celery"}, "callable"),
        ({"scope_kwargs": ["x"]}, "mapping"),
    ],
    ids=["scope_cls", "policy", "executor", "scope_kwargs"],
)
def test_wrong_kinds_are_refused(kwargs, message):
    with pytest.raises(TypeError, match=message):
        airlock.configure(**kwargs)
    assert airlock.get_configuration() == {
        "scope_cls": None,
        "policy": None,
        "executor": None,
        "scope_kwargs": {},
        "dispatch_errors": None,
    }
