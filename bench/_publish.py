"""Timing a flush through a queue executor against the queue library's own calls.

Shared by ``bench_dramatiq`` and ``bench_huey``: both publish N messages to the real
Redis with no consumer, emptying the queue before every round.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from bench._harness import Figure

__all__ = ["compare_publishing"]


def compare_publishing(
    name: str,
    *,
    plain: Callable[[], object],
    through_airlock: Callable[[], object],
    empty: Callable[[], object],
    count: int,
    quick: bool,
) -> list[Figure]:
    """Two figures: ``through_airlock`` over ``plain``, in wall-clock time (goal <= 1.05x)
    and in this process's CPU time (for context).

    Each round empties the queue first (untimed). The contenders alternate round
    by round, so a noisy neighbour on the shared machine hurts them alike, and
    the best round of each counts (the least disturbed estimate). Wall-clock time
    includes waiting for Redis, whose replies vary with the machine's load; CPU
    time is what this process spent, airlock's own work included, and varies less.
    """
    rounds = 7 if quick else 25
    plain()  # warm connections, scripts and serializers
    through_airlock()
    best = {plain: [float("inf")] * 2, through_airlock: [float("inf")] * 2}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for contender, fastest in best.items():
                empty()
                wall, cpu = time.perf_counter(), time.process_time()
                contender()
                fastest[0] = min(fastest[0], time.perf_counter() - wall)
                fastest[1] = min(fastest[1], time.process_time() - cpu)
    finally:
        if enabled:
            gc.enable()
        empty()
    per = 1e6 / count
    (plain_wall, plain_cpu), (airlock_wall, airlock_cpu) = best[plain], best[through_airlock]
    return [
        Figure(
            name,
            airlock_wall / plain_wall,
            "<= 1.05x",
            airlock_wall / plain_wall <= 1.05,
            f"{airlock_wall * per:.0f} vs {plain_wall * per:.0f} us/message",
        ),
        Figure(
            f"{name.partition(':')[0]}: the same, CPU time of this process",
            airlock_cpu / plain_cpu,
            "context",
            None,
            f"{airlock_cpu * per:.0f} vs {plain_cpu * per:.0f} us/message",
        ),
    ]
