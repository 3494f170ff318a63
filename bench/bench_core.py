"""The core's hot path against the floor: append ``(fn, args, kwargs)`` to a list, then call each.

Figures (issue 2's goals):
- enqueue + flush of 1,000 intents, sync executor, no observers      <= 4x the floor per intent
- the same with one no-op receiver on every signal                     <= 10x
- an empty ``with airlock.scope(): pass``                              <= 12x (vs one floor intent)
- eight nested scopes, one intent each                                 <= 150x (vs one floor intent)
- growth with depth: per-level cost at depth 32 vs depth 8             ~1x means linear
- per-intent time at 100,000 intents vs at 1,000                       <= 1.3x
- memory per buffered intent, tracemalloc                              <= 350 bytes
"""

from __future__ import annotations

import contextlib
import tracemalloc

import blinker

import airlock
from airlock import signals
from bench._harness import Figure, best_of, best_of_each


def task(i: int, key: str = "") -> None:
    pass


def floor(n: int) -> None:
    buffer = []
    for i in range(n):
        buffer.append((task, (i,), {"key": "v"}))
    for fn, args, kwargs in buffer:
        fn(*args, **kwargs)


def through_airlock(n: int) -> None:
    enqueue = airlock.enqueue
    with airlock.scope():
        for i in range(n):
            enqueue(task, i, key="v")


def empty_scope() -> None:
    with airlock.scope():
        pass


def nested(depth: int) -> None:
    enqueue = airlock.enqueue
    with contextlib.ExitStack() as stack:
        for level in range(depth):
            stack.enter_context(airlock.scope())
            enqueue(task, level, key="v")


def noop_receiver(sender: object, **kwargs: object) -> None:
    pass


def per_intent(fn, n: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    return best_of(lambda: fn(n), repeat=repeat) / n


def memory_per_intent(n: int) -> float:
    """Bytes allocated per buffered intent: the intent, its args tuple and kwargs dict.

    The argument values are made before measuring: they are the caller's data and
    exist with or without airlock.
    """
    values = list(range(10_000, 10_000 + n))
    scope = airlock.scope()
    scope.enter()
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for value in values:
            airlock.enqueue(task, value, key="v")
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        scope.exit()
        scope.discard()
    return (after - before) / n


def stock_blinker_send_cost(n: int, repeat: int) -> float:
    stock = blinker.Signal()
    stock.connect(noop_receiver)

    def run(count: int) -> None:
        send = stock.send
        for i in range(count):
            send(None, intent=i)

    return per_intent(run, n, repeat)


class _NoOpOnEverySignal(contextlib.AbstractContextManager[None]):
    """A no-op receiver on every signal, for the duration of a call."""

    def __enter__(self) -> None:
        for signal in signals.ALL:
            signal.connect(noop_receiver)

    def __exit__(self, *exc: object) -> None:
        for signal in signals.ALL:
            signal.disconnect(noop_receiver)


def run(quick: bool = False) -> list[Figure]:
    repeat = 3 if quick else 9
    n = 1_000
    # Units per call of each run, to turn its time per call into time per intent or scope.
    units = {"floor": n, "plain": n, "observed": n, "empty": 2_000, "depth8": 200, "depth32": 50}
    per_call = best_of_each(
        {
            "floor": lambda: floor(n),
            "plain": lambda: through_airlock(n),
            "observed": lambda: through_airlock(n),
            "empty": lambda: [empty_scope() for _ in range(2_000)],
            "depth8": lambda: [nested(8) for _ in range(200)],
            "depth32": lambda: [nested(32) for _ in range(50)],
        },
        repeat=repeat,
        contexts={"observed": _NoOpOnEverySignal()},
    )
    t = {name: seconds / units[name] for name, seconds in per_call.items()}
    base = t["floor"]
    figures = [
        Figure(
            "enqueue+flush 1,000 intents, no observers",
            t["plain"] / base,
            "<= 4x",
            t["plain"] / base <= 4,
            f"{t['plain'] * 1e9:.0f} ns vs floor {base * 1e9:.0f} ns per intent",
        ),
        Figure(
            "same, one no-op receiver on every signal",
            t["observed"] / base,
            "<= 10x",
            t["observed"] / base <= 10,
            f"{t['observed'] * 1e9:.0f} ns per intent",
        ),
    ]
    stock = stock_blinker_send_cost(n, repeat)
    figures.append(
        Figure(
            "(context) one stock blinker send, one receiver", stock / base, "-", None, f"{stock * 1e9:.0f} ns per send"
        )
    )
    figures.append(
        Figure(
            "empty `with airlock.scope(): pass`",
            t["empty"] / base,
            "<= 12x",
            t["empty"] / base <= 12,
            f"{t['empty'] * 1e9:.0f} ns",
        )
    )
    figures.append(
        Figure(
            "eight nested scopes, one intent each",
            t["depth8"] / base,
            "<= 150x",
            t["depth8"] / base <= 150,
            f"{t['depth8'] * 1e6:.1f} us",
        )
    )
    growth = (t["depth32"] / 32) / (t["depth8"] / 8)
    figures.append(
        Figure(
            "per-level cost at depth 32 vs depth 8 (linear ~ 1x)",
            growth,
            "<= 1.3x",
            growth <= 1.3,
            f"{t['depth32'] * 1e6:.1f} us at depth 32",
        )
    )

    big_n = 100_000
    sizes = best_of_each(
        {"big": lambda: through_airlock(big_n), "small": lambda: through_airlock(n)}, repeat=3 if quick else 5
    )
    big, small = sizes["big"] / big_n, sizes["small"] / n
    figures.append(
        Figure(
            "per-intent time at 100,000 vs at 1,000 intents",
            big / small,
            "<= 1.3x",
            big / small <= 1.3,
            f"{big * 1e9:.0f} vs {small * 1e9:.0f} ns",
        )
    )

    memory = memory_per_intent(big_n)
    figures.append(
        Figure(
            "memory per buffered intent (args (i,), kwargs {'key': 'v'})",
            memory,
            "<= 350 B",
            memory <= 350,
            "tracemalloc, intent + args + kwargs",
            unit=" B",
        )
    )
    return figures
