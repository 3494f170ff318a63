"""Publishing through ``dramatiq_executor`` against plain ``.send()``, on the real Redis.

Figure (issue 3's goal), against 1,000 plain ``actor.send()`` calls timed in the same run:
- flush 1,000 intents through ``dramatiq_executor``    <= 1.05x (wall clock)
- the same in this process's CPU time                  (context: airlock's own cost)

No worker runs: the queue is flushed before every round.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import airlock
from airlock.integrations.executors.dramatiq import dramatiq_executor
from bench._harness import Figure
from bench._publish import compare_publishing

N = 1_000
QUEUE = f"airlock-bench-dramatiq-{os.getpid()}"
BROKER = os.environ.get("AIRLOCK_BENCH_REDIS", "redis://127.0.0.1:6379/0")

broker = RedisBroker(url=BROKER, namespace=QUEUE)


@dramatiq.actor(broker=broker, queue_name=QUEUE)
def send_email(order_id: int, *, force: bool = False) -> None:
    """Never runs here: only its messages are timed."""


def plain_send() -> None:
    for i in range(N):
        send_email.send(i, force=True)


def through_airlock() -> None:
    enqueue = airlock.enqueue
    with airlock.scope(executor=dramatiq_executor):
        for i in range(N):
            enqueue(send_email, i, force=True)


def _empty() -> None:
    broker.flush(QUEUE)


def run(quick: bool) -> list[Figure]:
    try:
        figures = compare_publishing(
            "dramatiq: flush 1,000 intents via dramatiq_executor vs 1,000 .send()",
            plain=plain_send,
            through_airlock=through_airlock,
            empty=_empty,
            count=N,
            quick=quick,
        )
    finally:
        _empty()
    return figures
