"""The five scenes: a small shop driven through its real Django views, on a real queue.

Each scene makes its requests with Django's test client, waits for the consumer
to finish what reached the queue, then prints what happened (read back from the
shop's database and the queue's storage), airlock's log lines, and the trace.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.test import Client

import airlock
from airlock import signals
from airlock.integrations.opentelemetry import print_waterfall
from demo.observe import Observer
from demo.queues import Backend, DemoError
from demo.shop.models import Delivery, Order

BACKLOG = 6  # orders placed while the consumer is stopped (scene 5)


class Stage:
    """What every scene needs: the client, the queue, the observer, and how to print."""

    def __init__(self, backend: Backend, observer: Observer) -> None:
        self.backend = backend
        self.observer = observer
        self.client = Client()
        self.is_tty = sys.stdout.isatty()

    @contextmanager
    def scene(self, number: int, title: str, *, traces: int | None = None) -> Iterator[None]:
        """Print the scene's title, run it, then its log lines and trace waterfall.

        With ``traces``, only the first ``traces`` traces (and their log lines) are shown.
        """
        print(f"\n{'━' * 100}\n{number}. {title}\n")
        self.observer.take()  # start clean
        yield
        self.backend.settle()
        lines, spans = self.observer.take()
        shown = "the trace"
        if traces is not None:
            total = _trace_count(spans)
            spans = _first_traces(spans, traces)
            ids = {format(span.context.trace_id, "032x")[:8] for span in spans}
            lines = [line for line in lines if line.split(" ", 1)[0].removeprefix("trace=") in ids]
            shown = f"the first of {total} traces" if traces == 1 else f"the first {traces} of {total} traces"
        print(f"\n  airlock's log lines (structlog; ids and scope starts left out) of {shown}:")
        for line in lines:
            print(f"    {line}")
        print(f"\n  {shown}:\n")
        print_waterfall(spans)

    def request(self, method: str, path: str, **data: Any) -> Any:
        response = getattr(self.client, method.lower())(path, data)
        body = response.content.decode()
        query = " ".join(f"{key}={value}" for key, value in data.items())
        first, *more = body.splitlines() or [""]
        print(f"  {method} /{path.lstrip('/')} {query} -> {response.status_code} {first}")
        for line in more:
            print(f"      {line}")
        return response

    def deliveries(self, order: Order | None = None, **filters: Any) -> list[Delivery]:
        if order is not None:
            filters["order_id"] = order.pk
        return list(Delivery.objects.filter(**filters).order_by("pk"))

    def show_deliveries(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            print(f"      {delivery}")


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _trace_count(spans: list[Any]) -> int:
    return len({span.context.trace_id for span in spans})


def _first_traces(spans: list[Any], count: int) -> list[Any]:
    starts: dict[int, int] = {}
    for span in spans:
        trace_id = span.context.trace_id
        starts[trace_id] = min(starts.get(trace_id, span.start_time), span.start_time)
    first = set(sorted(starts, key=starts.__getitem__)[:count])
    return [span for span in spans if span.context.trace_id in first]


# -- the scenes --------------------------------------------------------------------------


def checkout_after_commit(stage: Stage) -> None:
    with stage.scene(1, "A checkout: its effects go out after the commit, and run on the consumer"):
        stage.request("POST", "/checkout", customer="ada")
        stage.backend.settle()
        order = Order.objects.get(customer="ada")
        print(f"\n  on the {stage.backend.name} consumer (read back from the shop's database):")
        stage.show_deliveries(stage.deliveries(order))
        print("  notify_warehouse is send_confirmation's follow-up: it left only once that run had succeeded")


def failed_checkout(stage: Stage) -> None:
    backend = stage.backend
    with stage.scene(2, "A failed checkout: its effects are discarded"):
        sent_before = backend.sent
        stage.request("POST", "/checkout", customer="bob", card="declined")
        backend.settle()
        print("\n  the transaction rolled back and the response is a 402, so the request's scope discarded its intent")
        print(f"  orders for bob in the database: {Order.objects.filter(customer='bob').count()}")
        print(f"  messages that reached {backend.where} for this request: {backend.sent - sent_before}")
        print(f"  messages waiting there now: {backend.waiting()}")


def admin_dry_run(stage: Stage) -> None:
    backend = stage.backend
    with stage.scene(3, "An admin dry run (DropAll), then a quiet run that blocks only the e-mails (BlockTasks)"):
        sent_before = backend.sent
        stage.request("GET", "/admin/remind", mode="dry-run")
        backend.settle()
        print(f"      messages that reached {backend.where}: {backend.sent - sent_before}\n")
        sent_before = backend.sent
        stage.request("GET", "/admin/remind", mode="quiet")
        backend.settle()
        print(f"      messages that reached {backend.where}: {backend.sent - sent_before}")
        print(f"\n  on the {backend.name} consumer:")
        stage.show_deliveries(stage.deliveries(task__in=["send_reminder", "refresh_stock"]))


def nested_services(stage: Stage) -> None:
    held: list[tuple[str, str, str]] = []
    sent_at_capture: list[int] = []
    backend = stage.backend

    def on_flushed(scope: airlock.Scope, *, intents: list[airlock.Intent]) -> None:
        # The request's scope: the outermost one in the web thread (the consumer's runs have their own).
        if scope.parent is None and threading.current_thread() is threading.main_thread():
            captured = {id(intent) for intent in scope.captured_intents}
            for intent in intents:
                source = "captured from a service's scope" if id(intent) in captured else "enqueued by the view"
                held.append((str(intent), source, scope.executor_for(intent).__name__))

    def on_captured(scope: airlock.Scope, *, intent: airlock.Intent, child: airlock.Scope) -> None:
        sent_at_capture.append(backend.sent)

    title = "A checkout that calls services with scopes of their own: the request's scope decides when"
    with (
        stage.scene(4, title),
        signals.scope_flushed.connected_to(on_flushed),
        signals.intent_captured.connected_to(on_captured),
    ):
        sent_before = backend.sent
        stage.request("POST", "/checkout", customer="carol", member="1")
        backend.settle()
        order = Order.objects.get(customer="carol")
        early = max(sent_at_capture, default=sent_before) - sent_before
        print(f"\n  the services' scopes closed first and sent nothing themselves (messages sent by then: {early});")
        print("  the request's scope held everything until its commit, then sent each intent its own way:")
        width = max(len(text) for text, _, _ in held)
        for text, source, executor in held:
            print(f"      {text:<{width}}  {source:<31}  via {executor}")
        print("  (the audit service chose the in-process sync executor; the loyalty service chose none, so the queue)")
        print("\n  what ran (read back from the shop's database):")
        stage.show_deliveries(stage.deliveries(order))


def consumer_outage(stage: Stage) -> None:
    backend = stage.backend
    with stage.scene(5, f"The {backend.name} consumer stopped while orders commit, then every one delivered", traces=1):
        backend.stop_consumer()
        print(f"  the {backend.name} consumer is stopped")
        for i in range(1, BACKLOG + 1):
            stage.request("POST", "/checkout", customer=f"dan-{i}")
        orders = list(Order.objects.filter(customer__startswith="dan-").order_by("pk"))
        print(f"\n  {len(orders)} orders committed; messages waiting in {backend.where}: {backend.waiting()}")
        delivered = deliver_backlog(stage, orders)
        print(f"  every order delivered: {delivered}/{len(orders)}, {_messages(backend.waiting())} waiting")


def deliver_backlog(stage: Stage, orders: list[Order]) -> int:
    """Bring delivery back and wait, with a progress line, until every order of the backlog is delivered.

    Today this restarts the consumer, which works through what the queue's storage
    kept while it was stopped. This is the one step a durable outbox's relay
    would take over, once airlock has one: everything else in the scene stays.
    """
    backend = stage.backend
    print(f"  the {backend.name} consumer is back: it works through what {backend.where} kept")
    backend.start_consumer()
    ids = [order.pk for order in orders]
    deadline = time.monotonic() + 15
    last = ""
    while True:
        done: int = Delivery.objects.filter(task="notify_warehouse", order_id__in=ids).count()
        line = f"  delivering: {done}/{len(ids)} orders done, {_messages(backend.waiting())} waiting"
        if line != last and stage.is_tty:
            print(f"\r{line:<{len(last)}}", end="", flush=True)
        elif line != last:
            print(line)
        last = line
        if done == len(ids):
            break
        if time.monotonic() > deadline:
            raise DemoError(f"the {backend.name} consumer delivered {done} of {len(ids)} orders in 15 s; run again")
        time.sleep(0.02)
    if stage.is_tty:
        print()
    backend.settle()
    return done


SCENES = [checkout_after_commit, failed_checkout, admin_dry_run, nested_services, consumer_outage]
