"""Publishing through ``celery_executor`` against plain ``.delay()``, on the real Redis.

Figures (issue 3's goals), each against 1,000 plain ``.delay()`` calls timed in the same run:
- flush 1,000 intents through ``celery_executor``                          <= 1.05x
- the same flush inside ``publishing()`` (one producer for the whole flush)  stretch: < 0.8x

And the cost of the executor's checks at enqueue (``check_enqueue``: options, the
signature, the serializer's round trip as a snapshot), against the same flush with
no check, in the same run (issue 11's goal, <= 1.3x): once with plain arguments,
once with a dict argument that the check encodes and snapshots.

No worker runs: the queue is purged before every round (not timed), so every round
publishes into an empty list. Each ratio is the median of per-round ratios.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

from celery import Celery

import airlock
from airlock.integrations.executors.celery import celery_executor, publishing
from bench._harness import Figure, best_of

N = 1_000
QUEUE = f"airlock-bench-celery-{os.getpid()}"
BROKER = os.environ.get("AIRLOCK_BENCH_REDIS", "redis://127.0.0.1:6379/0")

app = Celery("airlock_bench_celery", broker=BROKER, set_as_current=False)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=False)


@app.task(name="airlock_bench.send_email")
def send_email(order_id: int, *, force: bool = False) -> None:
    """Never runs here: only its messages are timed."""


def plain_delay() -> None:
    for i in range(N):
        send_email.delay(i, force=True)


def through_airlock() -> None:
    enqueue = airlock.enqueue
    with airlock.scope(executor=celery_executor):
        for i in range(N):
            enqueue(send_email, i, force=True)


def through_airlock_one_producer() -> None:
    enqueue = airlock.enqueue
    with publishing(), airlock.scope(executor=celery_executor):
        for i in range(N):
            enqueue(send_email, i, force=True)


def unchecked_executor(intent: airlock.Intent) -> object:
    """celery_executor without its check_enqueue: the path before issue 11."""
    return celery_executor(intent)


ORDER = {"id": 7, "status": "paid", "lines": [{"sku": "A1", "qty": 2}]}


def _flush(executor: Callable[[airlock.Intent], object], with_dict: bool) -> Callable[[], None]:
    def flush() -> None:
        enqueue = airlock.enqueue
        with airlock.scope(executor=executor):
            if with_dict:
                for i in range(N):
                    enqueue(send_email, i, force=ORDER)
            else:
                for i in range(N):
                    enqueue(send_email, i, force=True)

    flush.__name__ = f"{'checked' if executor is celery_executor else 'unchecked'}{'_dict' if with_dict else ''}"
    return flush


def _checks(rounds: int) -> list[Figure]:
    figures = []
    for with_dict in (False, True):
        checked, unchecked = _flush(celery_executor, with_dict), _flush(unchecked_executor, with_dict)
        checked(), unchecked()  # warm
        ratios, best = [], {checked: float("inf"), unchecked: float("inf")}
        for number in range(rounds):
            pair = (checked, unchecked) if number % 2 else (unchecked, checked)
            took = {fn: _round(fn) for fn in pair}
            ratios.append(took[checked] / took[unchecked])
            best = {fn: min(best[fn], took[fn]) for fn in best}
        ratio = statistics.median(ratios)
        per = 1e6 / N
        what = "a dict argument (encoded and snapshotted)" if with_dict else "plain arguments"
        figures.append(
            Figure(
                f"celery: checks at enqueue, {what}, vs none",
                ratio,
                "<= 1.3x",
                ratio <= 1.3,
                f"{best[checked] * per:.0f} vs {best[unchecked] * per:.0f} us/intent",
            )
        )
    return figures


def _purge() -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(QUEUE)


def _round(fn: Callable[[], None]) -> float:
    """One timed round on an empty queue (the purge is not timed)."""
    _purge()
    return best_of(fn, repeat=1)


def run(quick: bool) -> list[Figure]:
    rounds = 5 if quick else 15
    contenders = (plain_delay, through_airlock, through_airlock_one_producer)
    for fn in contenders:  # warm the connection pool, routes and serializers
        fn()
    # Round-robin, one round of each at a time, so a noisy neighbour hurts them
    # alike. Each ratio is taken within a round (neighbours in time) and the
    # median over rounds is reported; the best round of each gives the absolute times.
    times: dict[Callable[[], None], list[float]] = {fn: [] for fn in contenders}
    for number in range(rounds):
        shift = number % len(contenders)  # rotate who goes first: no order effect
        for fn in contenders[shift:] + contenders[:shift]:
            times[fn].append(_round(fn))
    plain_times, executor_times, batched_times = (times[fn] for fn in contenders)
    executor_ratio = statistics.median(e / p for e, p in zip(executor_times, plain_times, strict=True))
    batched_ratio = statistics.median(b / p for b, p in zip(batched_times, plain_times, strict=True))
    plain, executor, batched = (min(times[fn]) for fn in contenders)
    checks = _checks(rounds)
    _purge()
    per = 1e6 / N
    return [
        Figure(
            "celery: flush 1,000 intents via celery_executor vs 1,000 .delay()",
            executor_ratio,
            "<= 1.05x",
            executor_ratio <= 1.05,
            f"{executor * per:.0f} vs {plain * per:.0f} us/message",
        ),
        Figure(
            "celery: the same flush inside publishing() (one producer)",
            batched_ratio,
            "< 0.8x",
            batched_ratio < 0.8,
            f"{batched * per:.0f} vs {plain * per:.0f} us/message",
        ),
        *checks,
    ]
