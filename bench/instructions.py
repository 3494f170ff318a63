"""Instructions per intent (or per call), counted by valgrind's callgrind.

`python -m bench.instructions [core] [observability]` (needs `valgrind`; a few minutes each).

Wall-clock ratios on a shared machine move by a factor of two from run to run; counted
instructions agree to a fraction of a percent. Each line runs one piece of work 100 times in a fresh process and
600 times in another, under callgrind, and divides the difference by 500, so start-up
and imports cancel out.

- ``core``: the core bench's pieces, read against the floor (append ``(fn, args,
  kwargs)`` to a list, then call each).
- ``observability``: the calls airlock's telemetry is made of (per intent: the dispatch
  span, the enqueue event, the held-time measurement, two log events), each on its own
  with everything it needs built beforehand, then airlock doing all of it; read against
  one bare SDK span.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")

CORE = {
    "floor": "append (fn, args, kwargs) to a list, then call it: the baseline",
    "enqueue+flush": "an intent enqueued and flushed in a scope of 100, sync executor",
    "one no-op receiver": "the same with a no-op receiver on every signal",
    "empty scope": "an empty `with airlock.scope(): pass`",
    "eight nested": "eight nested scopes, one intent each",
}

OBSERVABILITY = {
    "bare span": "a span with no parent, no attributes: the baseline",
    "dispatch span": "PRODUCER child span, 7 attributes, a link, start time, made current and ended",
    "enqueue event": "an event with 2 attributes on the scope span",
    "held histogram": "one histogram measurement with 2 attributes (and its exemplar)",
    "structlog debug": "a debug event with 4 keys, to a null logger",
    "structlog info": "an info event with 7 keys, to a null logger",
    "airlock, both on": "a whole intent in a scope of 100, structlog + OTel SDK instrumented",
    "airlock, off": "a whole intent in a scope of 100, nothing instrumented",
}


_open: list[AbstractContextManager[Any]] = []


def _enter(manager: AbstractContextManager[T]) -> T:
    """Enter for the rest of the process (a dropped generator-based manager would exit)."""
    _open.append(manager)
    return manager.__enter__()


def _core_piece(name: str) -> Callable[[], None]:
    from airlock import signals
    from bench import bench_core as core

    if name == "one no-op receiver":
        for signal in signals.ALL:
            signal.connect(core.noop_receiver)
    return {
        "floor": lambda: core.floor(100),
        "enqueue+flush": lambda: core.through_airlock(100),
        "one no-op receiver": lambda: core.through_airlock(100),
        "empty scope": lambda: [core.empty_scope() for _ in range(100)],
        "eight nested": lambda: [core.nested(8) for _ in range(100)],
    }[name]


def _piece(name: str) -> Callable[[], None]:
    if name in CORE:
        return _core_piece(name)
    import structlog
    from opentelemetry import context, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from bench import bench_observability as observability

    if name.startswith("airlock"):
        on = name.endswith("both on")
        observed = _enter(observability.sdk(traces=on, metrics=on, logs=on))

        def intents() -> None:
            observability.intents(100)
            observed.exporter.clear()

        return intents

    telemetry = _enter(observability.sdk(traces=False, metrics=False, logs=False))  # airlock not instrumented
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    tracer = telemetry.provider.get_tracer("bench")
    histogram = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench").create_histogram("h", "ms")
    log = structlog.get_logger("bench").bind()
    scope = tracer.start_span("scope")
    parent = trace.set_span_in_context(scope)
    context.attach(parent)
    link = [trace.Link(scope.get_span_context())]
    attributes = {
        "messaging.system": "sync",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "task",
        "airlock.intent.id": "0123456789abcdef01234567",
        "airlock.intent.name": "task",
        "airlock.intent.held_ms": 0.5,
    }
    measured = {"airlock.intent.name": "task", "messaging.system": "sync"}
    event = {"airlock.intent.id": "0123456789abcdef01234567", "airlock.intent.name": "task"}
    dispatched = {"origin": None, "outcome": "dispatched", "deferral_ms": 0.5, "message_id": None}

    def dispatch_span() -> None:
        span = tracer.start_span("send task", parent, trace.SpanKind.PRODUCER, attributes, link, time.time_ns())
        token = context.attach(trace.set_span_in_context(span, parent))
        context.detach(token)
        span.end()

    one: Callable[[], object] = {
        "bare span": lambda: tracer.start_span("bare").end(),
        "dispatch span": dispatch_span,
        "enqueue event": lambda: scope.add_event("airlock.enqueue", event),
        "held histogram": lambda: histogram.record(0.5, measured),
        "structlog debug": lambda: log.debug("e", scope_id="s", intent_id="i", intent_name="t", origin=None),
        "structlog info": lambda: log.info("e", scope_id="s", intent_id="i", intent_name="t", **dispatched),
    }[name]

    def run() -> None:
        for _ in range(100):
            one()
        telemetry.exporter.clear()

    return run


def _child(name: str, rounds: int) -> None:
    run = _piece(name)
    for _ in range(3):  # warm caches, lazily built state
        run()
    for _ in range(rounds):
        run()


def _count(name: str, rounds: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            __spec__.name,
            "--child",
            name,
            str(rounds),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same start-up work in both runs
    )
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count for {name!r}:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def _report(pieces: dict[str, str], baseline: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, what in pieces.items():
        with ThreadPoolExecutor(2) as pool:  # the two runs side by side
            many, one = pool.map(_count, (name, name), (6, 1))
        counts[name] = (many - one) // 500
        ratio = counts[name] / counts[baseline]
        print(f"  {name:<20} {counts[name]:>9,} instructions  {ratio:6.2f}x  {what}", flush=True)
    return counts


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind)")
        return 1
    groups = sys.argv[1:] or ["core", "observability"]
    unknown = set(groups) - {"core", "observability"}
    if unknown:
        print(f"no such group: {', '.join(sorted(unknown))}; choose core and/or observability")
        return 2
    if "core" in groups:
        print("== core (per intent, or per scope for the scope lines) ==")
        _report(CORE, "floor")
    if "observability" in groups:
        print("== observability (per intent, or per call) ==")
        counts = _report(OBSERVABILITY, "bare span")
        floor = sum(
            counts[name]
            for name in ("dispatch span", "enqueue event", "held histogram", "structlog debug", "structlog info")
        )
        ratio = floor / counts["bare span"]
        print(f"  {'floor':<20} {floor:>9,} instructions  {ratio:6.2f}x  the five pieces of telemetry, with no airlock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
