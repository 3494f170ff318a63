"""The Django side of the demo: settings on a throw-away SQLite file, a tracing middleware, the URLs.

Everything is ordinary Django and airlock configuration: the airlock app reads
``settings.AIRLOCK`` at start-up (the outbox on, on the same SQLite database),
and ``AirlockMiddleware`` gives each request a scope that waits for the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings


def setup(directory: Path, executor: Callable[[Any], Any], outbox: dict[str, Any]) -> None:
    """Configure Django on ``directory/shop.sqlite3`` with airlock sending through ``executor``.

    The outbox is on (``AIRLOCK["OUTBOX"]``, with ``outbox`` added to its options):
    every intent is a row of ``airlock_outbox`` in the shop's own database, written
    in the request's transaction; ``migrate`` below creates its tables.
    """
    options: dict[str, Any] = {"timeout": 20}
    if django.VERSION >= (5, 1):
        # The web thread and the consumer thread both write: take the write lock at
        # BEGIN, and let readers read while a write is going on.
        options |= {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL"}
    settings.configure(
        DEBUG=False,
        SECRET_KEY="demo",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="demo.web",
        USE_TZ=True,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(directory / "shop.sqlite3"),
                "OPTIONS": options,
            }
        },
        INSTALLED_APPS=["airlock.integrations.django", "demo.shop.apps.ShopConfig"],
        MIDDLEWARE=["demo.web.TracingMiddleware", "airlock.integrations.django.AirlockMiddleware"],
        AIRLOCK={"EXECUTOR": executor, "OUTBOX": dict(outbox)},
        LOGGING_CONFIG=None,
    )
    django.setup()
    # The declined payment's 402 is on purpose; keep Django's warning about it quiet.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


class TracingMiddleware:
    """A server span per request, as opentelemetry-instrumentation-django would open."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from opentelemetry import trace

        self.get_response = get_response
        self.tracer = trace.get_tracer("demo.web")

    def __call__(self, request: Any) -> Any:
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(f"{request.method} {request.path}", kind=SpanKind.SERVER) as span:
            response = self.get_response(request)
            span.set_attribute("http.response.status_code", response.status_code)
            return response


def _urls() -> list[Any]:
    from django.urls import path

    from demo.shop import views

    return [path("checkout", views.checkout), path("admin/remind", views.remind_customers)]


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` only after setup(), when the views can be imported.
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)
