"""The five scenes: a small shop driven through its real Django views, on a real queue.

Each scene makes its requests with Django's test client, waits for the consumer
to finish what reached the queue, then prints what happened (read back from the
shop's database, its outbox table and the queue's storage), airlock's log lines,
and the trace. The outbox is on: every intent is a row of ``airlock_outbox``
written in the request's transaction, published right after the commit (the
fast path) or, when the queue cannot be reached, by the relay (scene 5).
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
from airlock.integrations.django.outbox import READY, SENT, OutboxMessage, Relay
from airlock.integrations.opentelemetry import print_waterfall
from demo import observe
from demo.observe import Observer
from demo.queues import Backend, DemoError, settle_publisher
from demo.shop.models import Delivery, Order

BACKLOG = 6  # orders placed while the queue is unreachable (scene 5)
DRAIN_SECONDS = 20.0  # how long scene 5 waits for the relay and the consumer


class Stage:
    """What every scene needs: the client, the queue, the observer, and how to print."""

    def __init__(self, backend: Backend, observer: Observer) -> None:
        self.backend = backend
        self.observer = observer
        self.client = Client()
        self.is_tty = sys.stdout.isatty()
        self._rows_seen = 0

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
            # Those of the traces shown, and those of no trace (the relay's, if it logged).
            lines = [
                line
                for line in lines
                if not line.startswith("trace=") or line.split(" ", 1)[0].removeprefix("trace=") in ids
            ]
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

    def new_rows(self) -> list[tuple[str, str, int]]:
        """The outbox rows written since the last call: ``(task, state, attempts)``, in order."""
        settle_publisher()  # as they are once the background publisher has done its part
        rows = list(
            OutboxMessage.objects.filter(pk__gt=self._rows_seen)
            .order_by("pk")
            .values_list("pk", "task", "state", "attempts")
        )
        if rows:
            self._rows_seen = rows[-1][0]
        return [(_short(task), state, attempts) for _, task, state, attempts in rows]

    def show_rows(self, rows: list[tuple[str, str, int]], why: str = "") -> None:
        if not rows:
            print(f"  outbox rows left by this request: none{why}")
            return
        print(f"  its outbox rows (airlock_outbox, in the shop's database), as they are now:{why}")
        width = max(len(task) for task, _, _ in rows)
        for task, state, _ in rows:
            print(f"      {task:<{width}}  {state}")


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _short(task: str) -> str:
    """A row's task name without its module (Huey registers ``demo.shop.tasks.name``)."""
    return task.rsplit(".", 1)[-1]


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
        print("  notify_warehouse is send_confirmation's follow-up: it left only once that run had succeeded\n")
        stage.show_rows(stage.new_rows())
        print("  (send_confirmation's row was written pending by the checkout's commit, inside it, made ready when the")
        print("  request's scope flushed after the commit, and published and marked sent by the outbox's background")
        print("  publisher thread, after the response: see the send span start after POST /checkout ends;")
        print("  the follow-up's row was written by the consumer's scope when its run succeeded)")
        print("  the publisher opens the send span in the request's trace, so the consumer's run joins it)")


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
        stage.show_rows(stage.new_rows(), " (its row waited for the commit, and the transaction rolled back)")


def admin_dry_run(stage: Stage) -> None:
    backend = stage.backend
    with stage.scene(3, "An admin dry run (DropAll), then a quiet run that blocks only the e-mails (BlockTasks)"):
        sent_before = backend.sent
        stage.request("GET", "/admin/remind", mode="dry-run")
        backend.settle()
        print(f"      messages that reached {backend.where}: {backend.sent - sent_before}")
        print(f"      outbox rows written: {len(stage.new_rows())} (an intent a policy refused never gets one)\n")
        sent_before = backend.sent
        stage.request("GET", "/admin/remind", mode="quiet")
        backend.settle()
        print(f"      messages that reached {backend.where}: {backend.sent - sent_before}")
        rows = stage.new_rows()
        print(f"      outbox rows written: {len(rows)} ({', '.join(f'{task} {state}' for task, state, _ in rows)})")
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
        print()
        stage.show_rows(stage.new_rows())
        print("  (write_audit has none: its scope chose the in-process executor and left the outbox out)")


def queue_outage(stage: Stage) -> None:
    backend = stage.backend
    title = f"{backend.name}'s queue unreachable while orders commit, then the relay delivering every one"
    with stage.scene(5, title, traces=1):
        backend.stop_consumer()
        backend.cut()
        print(f"  the {backend.name} consumer is stopped, and the queue cannot be reached: {backend.outage}")
        for i in range(1, BACKLOG + 1):
            stage.request("POST", "/checkout", customer=f"dan-{i}")
        orders = list(Order.objects.filter(customer__startswith="dan-").order_by("pk"))
        rows = stage.new_rows()
        ready = sum(state == READY for _, state, _ in rows)
        print(f"\n  {len(orders)} orders committed, and no request failed; the outbox holds {ready} rows {READY}")
        print("  (the first request's fast path found the queue unreachable and left its row for the relay;")
        print("  the next ones left theirs at once, without trying, for FAST_PATH_PAUSE seconds)")
        relay = Relay()
        with _as_relay():
            tried = relay.run_once()
        attempts = sum(OutboxMessage.objects.filter(state=READY).values_list("attempts", flat=True))
        print(f"  the relay tries: {tried.sent} sent, the queue is unreachable ({tried.unreachable}),")
        print(f"  {tried.released} rows released for later, attempts spent on them: {attempts}\n")
        backend.mend()
        backend.start_consumer()
        print(f"  the queue is back and the {backend.name} consumer started: the relay delivers")
        delivered = drain(stage, relay, orders)
        print(f"  every order delivered exactly once: {delivered}/{len(orders)} (read back from the shop's database)")


@contextmanager
def _as_relay() -> Iterator[None]:
    token = observe.place.set("relay")
    try:
        yield
    finally:
        observe.place.reset(token)


def drain(stage: Stage, relay: Relay, orders: list[Order]) -> int:
    """Run the relay until every order of the backlog has run on the consumer, with a progress line.

    This is what ``manage.py airlock_relay`` does, pass after pass: publish the
    ``ready`` rows. The follow-ups the consumer's runs enqueue become rows too,
    and go out by the fast path or, while it is still paused, by the relay.
    """
    ids = [order.pk for order in orders]
    deadline = time.monotonic() + DRAIN_SECONDS
    sent = 0
    last = ""
    while True:
        with _as_relay():
            sent += relay.run_once().sent
        left = OutboxMessage.objects.filter(state=READY).count()
        done: int = Delivery.objects.filter(task="notify_warehouse", order_id__in=ids).count()
        line = f"  relay: {left} rows left, {sent} sent; orders delivered: {done}/{len(ids)}"
        if line != last and stage.is_tty:
            print(f"\r{line:<{len(last)}}", end="", flush=True)
        elif line != last:
            print(line)
        last = line
        if done == len(ids) and left == 0:
            break
        if time.monotonic() > deadline:
            raise DemoError(
                f"the relay and the {stage.backend.name} consumer delivered {done} of {len(ids)} orders "
                f"in {DRAIN_SECONDS:.0f} s ({left} rows still ready); is the machine very busy? Run the demo again"
            )
        time.sleep(0.02)
    if stage.is_tty:
        print()
    stage.backend.settle()
    runs = Delivery.objects.filter(order_id__in=ids).values_list("order_id", "task")
    counts: dict[tuple[int, str], int] = {}
    for order_id, task in runs:
        counts[order_id, task] = counts.get((order_id, task), 0) + 1
    once = [
        order_id
        for order_id in ids
        if counts.get((order_id, "send_confirmation")) == 1 and counts.get((order_id, "notify_warehouse")) == 1
    ]
    sent_rows = OutboxMessage.objects.filter(state=SENT).count()
    print(f"  the outbox now (the rows of every scene so far): {sent_rows} {SENT}, {left} {READY}")
    return len(once)


SCENES = [checkout_after_commit, failed_checkout, admin_dry_run, nested_services, queue_outage]
