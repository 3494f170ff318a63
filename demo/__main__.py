"""The airlock demo: `make demo` (or `python -m demo`). Needs no server: SQLite, in-process queue.

Part 1 shows scopes on their own. Part 2 runs a real Django request against SQLite:
the view enqueues two tasks inside a transaction, airlock holds them until the commit,
a worker thread runs them (and finds the committed row), and the whole trace is drawn
as a waterfall in the terminal.
"""

from __future__ import annotations

import airlock

outbox: list[str] = []


def charge_card(order_id: int, amount: int) -> None:
    outbox.append(f"charged {amount} for order {order_id}")


def send_receipt(order_id: int) -> None:
    outbox.append(f"receipt for order {order_id}")


def place_order(order_id: int, *, declined: bool = False) -> None:
    """Domain code says what should happen, wherever it is."""
    airlock.enqueue(charge_card, order_id, amount=42)
    if declined:
        raise RuntimeError("card declined")
    airlock.enqueue(send_receipt, order_id)


def report(title: str) -> None:
    print(f"  {title}")
    for line in outbox or ["(nothing went out)"]:
        print(f"      -> {line}")
    outbox.clear()


def part_one() -> None:
    print("1. Scopes decide when and whether side effects leave\n")
    with airlock.scope():
        place_order(1)
        assert outbox == []  # nothing leaves while the scope is open
    report("a unit of work that succeeds flushes at the end:")

    try:
        with airlock.scope():
            place_order(2, declined=True)
    except RuntimeError:
        pass
    report("one that raises discards everything it enqueued:")

    with airlock.scope(airlock.DropAll()):
        place_order(3)
    report("a dry run (DropAll) sends nothing:")

    with airlock.scope():
        with airlock.scope():  # e.g. a library that opens its own scope
            place_order(4)
        assert outbox == []  # the inner flush was captured by the outer scope
    report("nested scopes: the outermost has the final word:")


def part_two() -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from airlock.integrations.opentelemetry import AirlockInstrumentor, print_waterfall
    from demo import web

    print("\n2. Django on SQLite: tasks leave after the commit, and the worker finds the row\n")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    AirlockInstrumentor().instrument(tracer_provider=provider, meter_provider=NoOpMeterProvider())
    web.setup(provider)
    from django.test import Client

    client = Client()
    worker = web.start_worker()
    tracer = provider.get_tracer("demo")
    try:
        with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER):
            response = client.get("/checkout", {"customer": "ada"})
        print(f"  GET /checkout -> {response.status_code} {response.content.decode()}")
        exporter_spans_ok = list(exporter.get_finished_spans())
        with tracer.start_as_current_span("GET /checkout?fail=1", kind=SpanKind.SERVER):
            failed = client.get("/checkout", {"customer": "bob", "fail": "1"})
        print(f"  GET /checkout?fail=1 -> {failed.status_code} {failed.content.decode()} (rolled back)")
    finally:
        web.stop_worker(worker)
        AirlockInstrumentor().uninstrument()
    for line in web.worker_log:
        print(f"      worker: {line}")
    print("      the failed request's tasks never reached the queue\n")
    first_trace = exporter_spans_ok[0].context.trace_id
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == first_trace]
    print_waterfall(spans)


def main() -> None:
    part_one()
    try:
        import django  # noqa: F401
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print("\n(part 2 needs the django and otel extras: pip install -e '.[django,otel]')")
        return
    part_two()


if __name__ == "__main__":
    main()
