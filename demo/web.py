"""The Django half of the demo: a real request, a real SQLite commit, a worker thread.

Everything here is ordinary Django and airlock configuration; only the "queue" is
an in-process ``queue.Queue`` so that the demo needs no broker.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import django
from django.conf import settings

import airlock
from airlock import Intent, _propagation

messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
worker_log: list[str] = []


def setup(tracer_provider: Any) -> None:
    """Configure Django on a throw-away SQLite file, with airlock's app and middleware."""
    database = Path(tempfile.mkdtemp(prefix="airlock-demo-")) / "shop.sqlite3"
    settings.configure(
        DEBUG=False,
        SECRET_KEY="demo",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="demo.web",
        USE_TZ=True,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}},
        INSTALLED_APPS=["airlock.integrations.django", "demo.shop.apps.ShopConfig"],
        MIDDLEWARE=["airlock.integrations.django.AirlockMiddleware"],
        AIRLOCK={"EXECUTOR": "demo.web.queue_executor"},
        LOGGING_CONFIG=None,
    )
    django.setup()
    # The demo's 400 is on purpose; keep Django's "Bad Request" warning out of the output.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    global tracer
    tracer = tracer_provider.get_tracer("demo")


tracer: Any = None


# -- the queue: an executor and a worker ---------------------------------------------


class Sent:
    """What the executor hands back, like a queue's message handle."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id


def queue_executor(intent: Intent) -> Sent:
    """Hand the intent to the worker thread, with the trace context in its headers."""
    message_id = uuid.uuid4().hex[:12]
    messages.put(
        {
            "id": message_id,
            "task": intent.task,
            "args": intent.args,
            "kwargs": intent.kwargs,
            "headers": _propagation.inject({}),
        }
    )
    return Sent(message_id)


queue_executor.messaging_system = "demo-queue"  # type: ignore[attr-defined]


def worker() -> None:
    """The worker: each run continues the request's trace and is a scope of its own."""
    from django.db import connection

    while (message := messages.get()) is not None:
        task = message["task"]
        with _propagation.continue_trace(message["headers"], name=task.__name__, system="demo-queue"):
            with airlock.scope():
                task(*message["args"], **message["kwargs"])
    connection.close()


def start_worker() -> threading.Thread:
    thread = threading.Thread(target=worker, name="demo-worker", daemon=True)
    thread.start()
    return thread


def stop_worker(thread: threading.Thread) -> None:
    messages.put(None)
    thread.join(timeout=10)


# -- the tasks ---------------------------------------------------------------------------


def send_confirmation(order_id: int) -> None:
    from demo.shop.models import Order

    with tracer.start_as_current_span("SELECT shop_order"):
        order = Order.objects.filter(pk=order_id).first()
    worker_log.append(f"send_confirmation: found {order}" if order else f"send_confirmation: order {order_id} MISSING")


def notify_warehouse(order_id: int) -> None:
    from demo.shop.models import Order

    found = Order.objects.filter(pk=order_id).exists()
    worker_log.append(f"notify_warehouse: order {order_id} {'found' if found else 'MISSING'}")


# -- the view ----------------------------------------------------------------------------


def checkout(request: Any) -> Any:
    """Create an order in a transaction; the side effects are enqueued inside it."""
    from django.db import transaction
    from django.http import HttpResponse, HttpResponseBadRequest

    from demo.shop.models import Order

    customer = request.GET.get("customer", "ada")
    commit_span: list[Any] = []
    with tracer.start_as_current_span("transaction"), transaction.atomic():
        # Registered first, so it runs first once the commit is done: it closes the COMMIT span.
        transaction.on_commit(lambda: commit_span and commit_span[0].end())
        with tracer.start_as_current_span("INSERT shop_order"):
            order = Order.objects.create(customer=customer, total=42)
        airlock.enqueue(send_confirmation, order.pk, _origin="checkout")
        airlock.enqueue(notify_warehouse, order.pk, _origin="checkout")
        if request.GET.get("fail"):
            transaction.set_rollback(True)
            return HttpResponseBadRequest("payment declined")
        commit_span.append(tracer.start_span("COMMIT"))
    return HttpResponse(f"order {order.pk} placed")


def _urls() -> list[Any]:
    from django.urls import path

    return [path("checkout", checkout)]


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` only after setup(), when views can be routed.
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)
