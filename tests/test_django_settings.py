"""settings.AIRLOCK: applied at start-up, and every mistake refused there with a useful message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

import airlock
from airlock import DropAll, LogOnFlush, Scope
from airlock.integrations.django import DjangoScope, configure_from_settings


def record(intent: airlock.Intent) -> str:
    return intent.name


class NeedsAnArgument:
    def __init__(self, level: int) -> None: ...
    def on_enqueue(self, intent): ...
    def allows(self, intent):
        return True


class NotAScope:
    pass


def test_the_app_configures_airlock_when_django_starts(settings):
    settings.AIRLOCK = {
        "POLICY": "airlock.DropAll",
        "EXECUTOR": f"{__name__}.record",
        "SCOPE_KWARGS": {"using": "other"},
    }
    apps.get_app_config("airlock").ready()
    chosen = airlock.get_configuration()
    assert type(chosen["policy"]) is DropAll
    assert chosen["executor"] is record
    assert chosen["scope_cls"] is DjangoScope
    assert chosen["scope_kwargs"] == {"using": "other"}
    with airlock.scope() as scope:
        pass
    assert type(scope) is DjangoScope and scope.using == "other"


def test_objects_work_as_well_as_paths():
    policy = LogOnFlush()
    chosen = configure_from_settings({"POLICY": policy, "EXECUTOR": record, "SCOPE": Scope})
    assert chosen["policy"] is policy and chosen["executor"] is record and chosen["scope_cls"] is Scope


def test_no_setting_means_a_django_scope_and_the_core_defaults(settings):
    del settings.AIRLOCK
    configure_from_settings()
    chosen = airlock.get_configuration()
    assert chosen == {
        "scope_cls": DjangoScope,
        "policy": None,
        "executor": None,
        "scope_kwargs": {},
        "dispatch_errors": None,
    }


def test_the_seed_celery_example_imports():
    pytest.importorskip("celery")
    chosen = configure_from_settings({"EXECUTOR": "airlock.integrations.executors.celery.celery_executor"})
    assert callable(chosen["executor"])


BAD = [
    ("not a dict", ["must be a dict", "POLICY, EXECUTOR, SCOPE, SCOPE_KWARGS"]),
    ({"EXECUTER": record}, ["'EXECUTER'", "did you mean 'EXECUTOR'?", "POLICY, EXECUTOR, SCOPE, SCOPE_KWARGS"]),
    ({"policy": DropAll()}, ["'policy'", "did you mean 'POLICY'?"]),
    ({"POLICY": "airlock.NoSuchPolicy"}, ["AIRLOCK['POLICY']", "does not import", "airlock.LogOnFlush"]),
    ({"EXECUTOR": "nowhere.at_all"}, ["AIRLOCK['EXECUTOR']", "does not import"]),
    ({"SCOPE": "airlock.integrations.django.NoScope"}, ["AIRLOCK['SCOPE']", "does not import"]),
    ({"POLICY": record}, ["AIRLOCK['POLICY']", "on_enqueue(intent) and allows(intent)"]),
    ({"POLICY": f"{__name__}.NeedsAnArgument"}, ["AIRLOCK['POLICY']", "takes no arguments"]),
    ({"EXECUTOR": "airlock.DropAll"}, ["AIRLOCK['EXECUTOR']", "not a class"]),
    ({"EXECUTOR": 42}, ["AIRLOCK['EXECUTOR']", "a callable taking one Intent"]),
    ({"SCOPE": f"{__name__}.NotAScope"}, ["AIRLOCK['SCOPE']", "subclass of airlock.Scope"]),
    ({"SCOPE": DjangoScope()}, ["AIRLOCK['SCOPE']", "subclass of airlock.Scope"]),
    ({"SCOPE_KWARGS": ["using"]}, ["AIRLOCK['SCOPE_KWARGS']", "a dict of keyword arguments"]),
    ({"SCOPE_KWARGS": {"using": "nope"}}, ["AIRLOCK['SCOPE_KWARGS']", "DjangoScope", "'default', 'other'"]),
    ({"SCOPE_KWARGS": {"colour": "red"}}, ["AIRLOCK['SCOPE_KWARGS']", "colour"]),
    ({"SCOPE": Scope, "SCOPE_KWARGS": {"using": "other"}}, ["AIRLOCK['SCOPE_KWARGS']", "Scope", "using"]),
]


@pytest.mark.parametrize(
    ("value", "fragments"),
    BAD,
    ids=[
        "not-a-dict",
        "unknown-key",
        "lowercase-key",
        "policy-path",
        "executor-path",
        "scope-path",
        "policy-kind",
        "policy-class-args",
        "executor-class",
        "executor-kind",
        "scope-kind",
        "scope-instance",
        "kwargs-kind",
        "kwargs-alias",
        "kwargs-unknown",
        "kwargs-for-plain-scope",
    ],
)
def test_mistakes_raise_improperly_configured_naming_the_key_and_choices(value, fragments):
    before = airlock.get_configuration()
    with pytest.raises(ImproperlyConfigured) as raised:
        configure_from_settings(value)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message
    assert airlock.get_configuration() == before  # nothing half-applied


def test_a_bad_setting_fails_at_start_up(settings):
    settings.AIRLOCK = {"EXECUTOR": "nowhere.at_all"}
    with pytest.raises(ImproperlyConfigured, match="EXECUTOR"):
        apps.get_app_config("airlock").ready()


def test_without_django_the_import_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['django'] = None  # as if Django were not installed\n"
        "try:\n"
        "    import airlock.integrations.django\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'airlock-dispatch[django]'" in result.stdout
