"""The user document's "With Django" example, as written: middleware + Celery executor.

"Both tasks dispatch via Celery after transaction.on_commit()": proven with the
request in a transaction (what ``ATOMIC_REQUESTS`` does), Redis and a real
worker whose tasks read the order the request created.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import redis
from celery import Celery
from celery.signals import after_task_publish
from django.conf import settings as django_settings
from django.db import connections, transaction
from django.http import HttpResponse
from django.test import RequestFactory, override_settings
from django.utils.module_loading import import_string

import airlock
from tests.celery_support import DEFAULT_QUEUE, JOURNAL, REDIS_KEYPREFIX, REDIS_URL, configure_app, serving
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop.models import Order

require_database()

SETTINGS = """
# settings.py
MIDDLEWARE = [
    "airlock.integrations.django.AirlockMiddleware",
]

AIRLOCK = {
    "EXECUTOR": "airlock.integrations.executors.celery.celery_executor",
}
"""

VIEW = """
import airlock

def checkout_view(request):
    order = process_checkout(request)
    airlock.enqueue(send_confirmation, order_id=order.id)
    airlock.enqueue(notify_warehouse, order_id=order.id)
    return HttpResponse("OK")
# Both tasks dispatch via Celery after transaction.on_commit()
"""


def make_app() -> tuple[Celery, Any, Any]:
    app = Celery("airlock_django_seed", set_as_current=False)
    configure_app(app, "redis")

    def looks_up(name: str) -> Any:
        def run(order_id: int) -> None:
            try:
                found = Order.objects.filter(pk=order_id).exists()
            finally:
                connections.close_all()  # the worker thread's own connection
            JOURNAL.add(kind="django-seed", token=order_id, task=name, found=found)

        run.__name__ = run.__qualname__ = name
        return app.task(name=f"airlock_django_seed.{name}", shared=False)(run)

    return app, looks_up("send_confirmation"), looks_up("notify_warehouse")


@contextlib.contextmanager
def publishes_recorded() -> Any:
    """Note, for each publish, whether the publishing thread was still inside a transaction."""
    seen: list[tuple[str, bool]] = []

    def note(sender: str, **kwargs: Any) -> None:
        if sender.startswith("airlock_django_seed."):
            seen.append((sender.rsplit(".", 1)[1], connections["default"].in_atomic_block))

    after_task_publish.connect(note, weak=False)
    try:
        yield seen
    finally:
        after_task_publish.disconnect(note)


@pytest.mark.django_db(transaction=True)
def test_the_django_example_dispatches_through_celery_after_the_commit(redis_url: str) -> None:
    app, send_confirmation, notify_warehouse = make_app()
    settings: dict[str, Any] = {}
    exec(SETTINGS, settings)
    # As written: the settings name no airlock app in INSTALLED_APPS, and nothing
    # configured airlock; the middleware alone must honour settings.AIRLOCK.
    without_app = [app for app in django_settings.INSTALLED_APPS if app != "airlock.integrations.django"]
    assert airlock.get_configuration()["executor"] is None
    middleware_class = import_string(settings["MIDDLEWARE"][0])

    def process_checkout(request: Any) -> Order:
        return Order.objects.create(sku=request.POST["sku"])

    namespace: dict[str, Any] = {
        "HttpResponse": HttpResponse,
        "process_checkout": process_checkout,
        "send_confirmation": send_confirmation,
        "notify_warehouse": notify_warehouse,
    }
    exec(VIEW, namespace)
    # ATOMIC_REQUESTS: Django runs the view, inside the middleware, in atomic().
    with override_settings(INSTALLED_APPS=without_app, MIDDLEWARE=settings["MIDDLEWARE"], AIRLOCK=settings["AIRLOCK"]):
        handler = middleware_class(transaction.atomic(namespace["checkout_view"]))
    try:
        with publishes_recorded() as published:
            response = handler(RequestFactory().post("/checkout/", {"sku": "tea"}))
        assert response.status_code == 200
        assert published == [("send_confirmation", False), ("notify_warehouse", False)]
        order_id = Order.objects.get().pk
        with serving(app, [DEFAULT_QUEUE]):
            runs = JOURNAL.wait_for(order_id, 2, "django-seed")
        assert sorted((run["task"], run["found"]) for run in runs) == [
            ("notify_warehouse", True),
            ("send_confirmation", True),
        ]
    finally:
        airlock.reset_configuration()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{REDIS_KEYPREFIX}*"))
        if keys:
            client.delete(*keys)
        client.close()
