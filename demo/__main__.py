"""A small shop shows what airlock does with side effects.

Run with `make demo`. It needs nothing but airlock itself: the "queue" is a list.
"""

from __future__ import annotations

import airlock
from airlock import signals

outbox: list[str] = []


def send_confirmation(order_id: int) -> None:
    outbox.append(f"confirmation for order {order_id}")


def charge_card(order_id: int, amount: int) -> None:
    outbox.append(f"charged {amount} for order {order_id}")


def place_order(order_id: int, *, declined: bool = False) -> None:
    """Domain code: says what should happen, wherever it is."""
    airlock.enqueue(charge_card, order_id, amount=42)
    if declined:
        raise RuntimeError("card declined")
    airlock.enqueue(send_confirmation, order_id)


def show(title: str) -> None:
    print(f"\n== {title}")
    for line in outbox or ["(nothing went out)"]:
        print(f"   {line}")
    outbox.clear()


def main() -> None:
    signals.intent_enqueued.connect(lambda scope, intent: print(f"   enqueued {intent}"), weak=False)

    with airlock.scope():
        place_order(1)
        print("   ...still inside the scope: nothing has gone out yet")
    show("a request that succeeds flushes at the end")

    try:
        with airlock.scope():
            place_order(2, declined=True)
    except RuntimeError as error:
        print(f"   the request failed: {error}")
    show("a request that fails discards everything it enqueued")

    with airlock.scope(airlock.DropAll()) as scope:
        place_order(3)
    show(f"a dry run (DropAll) sends nothing; flushed={scope.is_flushed}")

    with airlock.scope():
        with airlock.scope():  # e.g. a library opening its own scope
            place_order(4)
        print("   the inner scope flushed, but the outer one has the final word")
    show("nested scopes dispatch once, at the outermost")


if __name__ == "__main__":
    main()
