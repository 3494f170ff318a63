"""How long a flush of 10 intents takes when the broker is down, gone mid-flush or frozen.

For each queue executor (Celery, Dramatiq, Huey) and each fault of
``tests/faults.py`` (a closed port, our own Redis stopped mid-flush, our own
Redis frozen with SIGSTOP, a RabbitMQ stopped mid-flush through a proxy we
control), with the executors' defaults. Goal (issue 11): under 5 s for the whole
flush, every intent dispatched or reported failed. A flush still blocked after
``CAP`` seconds is shown as unfinished.

These are absolute seconds, not ratios: what is measured is a wait for timeouts,
which the machine's load barely changes.
"""

from __future__ import annotations

import logging
import os

from tests.faults import cases, flush_into

from bench._harness import Figure

COUNT = 10
GOAL = 5.0
CAP = float(os.environ.get("AIRLOCK_BENCH_FAULT_CAP", "70"))


def run(quick: bool) -> list[Figure]:
    # Dramatiq and kombu log each failed publish; the table is what matters here.
    logging.disable(logging.CRITICAL)
    try:
        return [_figure(queue, fault) for queue, fault in cases()]
    finally:
        logging.disable(logging.NOTSET)


def _figure(queue: str, fault: str) -> Figure:
    outcome = flush_into(queue, fault, count=COUNT, cap=CAP)
    lost = COUNT - outcome.accounted
    detail = f"{len(outcome.dispatched)} sent, {len(outcome.failed)} reported failed"
    if not outcome.finished:
        detail += f", still blocked after {CAP:.0f} s"
    elif lost:
        detail += f", {lost} LOST"
    return Figure(
        f"{queue}: {COUNT} intents, {fault}",
        outcome.seconds,
        f"< {GOAL:.0f}s",
        outcome.finished and not lost and outcome.seconds < GOAL,
        detail,
        unit="s",
    )
