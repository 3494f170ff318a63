"""The seed's Django settings as written (no app in INSTALLED_APPS), the system checks, and
nested scopes with their own executors under a ``DjangoScope`` and the middleware."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

import airlock
from airlock.integrations.django import AirlockMiddleware, DjangoScope
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop.models import Order

require_database()

WITHOUT_APP = [app for app in django_settings.INSTALLED_APPS if app != "airlock.integrations.django"]
SENT: list[tuple[str, Any]] = []


def recording_executor(intent: airlock.Intent) -> str:
    SENT.append((intent.name, intent.kwargs))
    return "recorded"


def inner_executor(intent: airlock.Intent) -> str:
    SENT.append(("inner:" + intent.name, intent.kwargs))
    return "inner"


def send_confirmation(order_id: int) -> None:
    SENT.append(("sync:send_confirmation", {"order_id": order_id}))


@pytest.fixture(autouse=True)
def _fresh():
    SENT.clear()
    yield
    SENT.clear()


def airlock_ids(messages: list[checks.CheckMessage]) -> list[str]:
    return sorted(message.id for message in messages if message.id.startswith("airlock."))


@pytest.mark.django_db(transaction=True)
def test_middleware_alone_applies_settings_and_waits_for_the_commit() -> None:
    seen_inside: list[list[Any]] = []

    def checkout_view(request: Any) -> HttpResponse:
        order = Order.objects.create(sku="tea")
        airlock.enqueue(send_confirmation, order_id=order.id)
        seen_inside.append(list(SENT))
        return HttpResponse("OK")

    with override_settings(
        INSTALLED_APPS=WITHOUT_APP,
        AIRLOCK={"EXECUTOR": f"{__name__}.recording_executor"},
    ):
        assert airlock.get_configuration()["executor"] is None  # nothing configured it yet
        handler = AirlockMiddleware(transaction.atomic(checkout_view))
        response = handler(RequestFactory().post("/checkout/"))
    assert response.status_code == 200
    assert seen_inside == [[]], "nothing may leave before the commit"
    assert SENT == [("send_confirmation", {"order_id": Order.objects.get().pk})]
    assert airlock.get_configuration()["scope_cls"] is DjangoScope


def test_check_warns_when_only_the_middleware_honours_the_settings() -> None:
    with override_settings(INSTALLED_APPS=WITHOUT_APP, AIRLOCK={"EXECUTOR": f"{__name__}.recording_executor"}):
        assert airlock_ids(checks.run_checks()) == ["airlock.W001"]
        with override_settings(MIDDLEWARE=[]):
            messages = [m for m in checks.run_checks() if m.id == "airlock.E002"]
            assert messages and "INSTALLED_APPS" in messages[0].hint
    assert airlock_ids(checks.run_checks()) == [], "with the app installed there is nothing to say"


def test_a_setting_only_the_app_can_honour_fails_loudly_without_it() -> None:
    with override_settings(INSTALLED_APPS=WITHOUT_APP, AIRLOCK={"OUTBOX": True}):
        assert "airlock.E001" in airlock_ids(checks.run_checks())
        with pytest.raises(ImproperlyConfigured, match=r"add 'airlock\.integrations\.django' to INSTALLED_APPS"):
            AirlockMiddleware(lambda request: HttpResponse())


def test_bad_scope_kwargs_key_says_did_you_mean() -> None:
    from airlock.integrations.django import configure_from_settings

    with pytest.raises(ImproperlyConfigured, match="did you mean 'using'"):
        configure_from_settings({"SCOPE_KWARGS": {"usign": "other"}})
    with pytest.raises(TypeError, match="did you mean 'executor'"):
        DjangoScope(executer=recording_executor)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_inner_scope_executor_is_kept_under_the_middleware(outcome: str) -> None:
    """The request's scope decides when (after the commit, or never); the inner scope decides how."""

    def view(request: Any) -> HttpResponse:
        with transaction.atomic():
            order = Order.objects.create(sku="tea")
            airlock.enqueue(send_confirmation, order_id=order.id)
            with airlock.scope(executor=inner_executor):
                airlock.enqueue(send_confirmation, order_id=order.id, channel="sms")
            assert SENT == []
            if outcome == "rollback":
                transaction.set_rollback(True)
        return HttpResponse("OK")

    AirlockMiddleware(view)(RequestFactory().post("/checkout/"))
    if outcome == "rollback":
        assert SENT == []
    else:
        order_id = Order.objects.get().pk
        assert SENT == [
            ("sync:send_confirmation", {"order_id": order_id}),
            ("inner:send_confirmation", {"order_id": order_id, "channel": "sms"}),
        ]


@pytest.mark.django_db(transaction=True)
def test_inner_scope_executor_is_kept_under_a_django_scope_with_a_configured_executor() -> None:
    airlock.configure(scope_cls=DjangoScope, executor=recording_executor)
    with airlock.scope() as outer, transaction.atomic():
        airlock.enqueue(send_confirmation, order_id=1)
        with airlock.scope(executor=inner_executor):
            airlock.enqueue(send_confirmation, order_id=2)
        with airlock.scope():  # no choice of its own: the configured default, like the outer
            airlock.enqueue(send_confirmation, order_id=3)
    assert SENT == [
        ("send_confirmation", {"order_id": 1}),
        ("inner:send_confirmation", {"order_id": 2}),
        ("send_confirmation", {"order_id": 3}),
    ]
    assert outer.is_flushed
