"""Timing helpers shared by the benchmarks.

Each ``bench/bench_<area>.py`` module exposes ``run(quick: bool) -> list[Figure]``.
A figure is always a ratio against a baseline measured in the same run, because the
machine is shared and noisy: absolute times are printed for context only.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

__all__ = ["Figure", "best_of", "best_of_each"]


@dataclass(frozen=True)
class Figure:
    """One line of the report."""

    name: str
    value: float  # the ratio (or bytes, see unit)
    goal: str  # e.g. "<= 4x"
    met: bool | None  # None where there is no goal to meet
    detail: str = ""  # absolute numbers, for context
    unit: str = "x"


def best_of(
    fn: Callable[[], object],
    *,
    repeat: int = 7,
    number: int = 1,
    setup: Callable[[], object] | None = None,
) -> float:
    """The fastest of ``repeat`` timings of ``number`` calls, in seconds per call.

    The minimum is the least noisy estimate on a shared machine; the garbage
    collector is paused while timing, as ``timeit`` does. ``setup`` runs before
    each timing, untimed.
    """
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            if setup is not None:
                setup()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - start) / number)
    finally:
        if enabled:
            gc.enable()
    return best


def best_of_each(
    fns: dict[str, Callable[[], object]],
    *,
    repeat: int = 7,
    setup: Callable[[], object] | None = None,
    contexts: Mapping[str, AbstractContextManager[object]] | None = None,
) -> dict[str, float]:
    """``best_of`` for several functions, taking turns, so that a slow spell of the
    machine falls on all of them rather than on whichever ran then. Seconds per call.

    A function named in ``contexts`` is timed inside its context manager, which is
    entered and left untimed.
    """
    best = dict.fromkeys(fns, float("inf"))
    contexts = contexts or {}
    for _ in range(repeat):
        for name, fn in fns.items():
            with contexts.get(name) or nullcontext():
                best[name] = min(best[name], best_of(fn, repeat=1, setup=setup))
    return best
