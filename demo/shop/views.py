"""The shop's views: ordinary Django, with ``airlock.enqueue`` where ``.delay()`` would be.

The request's scope comes from ``AirlockMiddleware``: intents enqueued in a
transaction wait for its commit and are dropped if it rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from opentelemetry import trace

import airlock
from airlock import signals
from demo.shop import services, tasks
from demo.shop.models import Order

tracer = trace.get_tracer("demo.shop")


class PaymentDeclined(Exception):
    pass


@contextmanager
def traced_transaction() -> Iterator[None]:
    """``transaction.atomic()`` with spans for the transaction and its COMMIT, for the waterfall."""
    commit: list[Any] = []
    with tracer.start_as_current_span("transaction"), transaction.atomic():
        # Registered first, so it runs first after the commit: it closes the COMMIT span.
        transaction.on_commit(lambda: commit and commit[0].end())
        yield
        commit.append(tracer.start_span("COMMIT"))


def checkout(request: HttpRequest) -> HttpResponse:
    """Place an order; ``card=declined`` fails the payment, ``member=1`` calls the member services."""
    customer = request.POST.get("customer", "ada")
    try:
        with traced_transaction():
            with tracer.start_as_current_span("INSERT shop_order"):
                order = Order.objects.create(customer=customer, total=420)
            airlock.enqueue(tasks.send_confirmation, order.pk)
            if request.POST.get("member"):
                services.award_loyalty_points(order)
                services.record_audit(order)
            if request.POST.get("card") == "declined":
                raise PaymentDeclined(f"card declined for {customer}")
    except PaymentDeclined as error:
        return HttpResponse(f"payment declined, nothing ordered ({error})", status=402)
    return HttpResponse(f"{order} placed", status=201)


def remind_customers(request: HttpRequest) -> HttpResponse:
    """An admin action: remind every customer and refresh the stock levels.

    ``mode=dry-run`` sends nothing (``DropAll``) and lists what would have gone;
    ``mode=quiet`` blocks only the e-mails (``BlockTasks``): the stock refresh still goes.
    """
    mode = request.GET.get("mode", "send")
    policies = {"dry-run": airlock.DropAll(), "quiet": airlock.BlockTasks([tasks.send_reminder]), "send": None}
    if mode not in policies:
        return HttpResponse(f"unknown mode {mode!r}; use one of {', '.join(policies)}", status=400)
    dropped: list[airlock.Intent] = []
    scope = airlock.scope(policies[mode])

    def note(sender: Any, *, intent: airlock.Intent, policy: Any) -> None:
        dropped.append(intent)

    with signals.intent_dropped.connected_to(note, sender=scope), scope:
        for order in Order.objects.order_by("pk"):
            airlock.enqueue(tasks.send_reminder, order.pk)
        airlock.enqueue(tasks.refresh_stock)
    held = {id(intent) for intent in dropped}
    kept = [intent for intent in scope.intents if id(intent) not in held]
    lines = [f"{mode}: {len(dropped)} held back by {type(scope.policy).__name__}, {len(kept)} to send"]
    lines += [f"  held back: {intent}" for intent in dropped]
    lines += [f"  sending:   {intent}" for intent in kept]
    return HttpResponse("\n".join(lines), content_type="text/plain")
