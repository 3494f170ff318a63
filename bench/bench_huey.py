"""Publishing through ``huey_executor`` against plain task calls, on the real Redis.

Figure (issue 3's goal), against 1,000 plain ``task(...)`` calls on a ``RedisHuey``
timed in the same run:
- flush 1,000 intents through ``huey_executor``    <= 1.05x (wall clock)
- the same in this process's CPU time              (context: airlock's own cost)

No consumer runs: the queue is flushed before every round.
"""

from __future__ import annotations

import os

from huey import RedisHuey

import airlock
from airlock.integrations.executors.huey import huey_executor
from bench._harness import Figure
from bench._publish import compare_publishing

N = 1_000
BROKER = os.environ.get("AIRLOCK_BENCH_REDIS", "redis://127.0.0.1:6379/0")

huey = RedisHuey(f"airlock-bench-huey-{os.getpid()}", url=BROKER)


@huey.task()
def send_email(order_id: int, *, force: bool = False) -> None:
    """Never runs here: only its messages are timed."""


def plain_call() -> None:
    for i in range(N):
        send_email(i, force=True)


def through_airlock() -> None:
    enqueue = airlock.enqueue
    with airlock.scope(executor=huey_executor):
        for i in range(N):
            enqueue(send_email, i, force=True)


def run(quick: bool) -> list[Figure]:
    try:
        figures = compare_publishing(
            "huey: flush 1,000 intents via huey_executor vs 1,000 task calls",
            plain=plain_call,
            through_airlock=through_airlock,
            empty=huey.flush,
            count=N,
            quick=quick,
        )
    finally:
        huey.flush()
    return figures
