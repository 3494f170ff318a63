"""See and run commit-bound intents in Django's ``TestCase``, which never commits.

``DjangoScope`` hands intents to ``transaction.on_commit``, and a ``TestCase``
rolls its transaction back at the end, so without help those intents would
vanish silently. Two helpers, both built on Django's own ``on_commit`` queue so
they agree with ``TestCase.captureOnCommitCallbacks``:

- :func:`capture_on_commit` records the intents scheduled for commit inside a
  block, and with ``execute=True`` sends them as a real commit would;
- :func:`waiting_for_commit` lists what is waiting right now.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections  # type: ignore[import-untyped]  # Django ships no type hints
from django.test import TestCase  # type: ignore[import-untyped]

from airlock import Intent
from airlock.integrations.django._scope import scheduled_intents

__all__ = ["capture_on_commit", "waiting_for_commit"]


@contextmanager
def capture_on_commit(*, using: str = DEFAULT_DB_ALIAS, execute: bool = False) -> Iterator[list[Intent]]:
    """Collect the intents scheduled for commit on ``using`` inside the block.

    The list fills when the block ends, in dispatch order. With ``execute=True``
    every ``on_commit`` callback of the block runs at its end, as Django's
    ``captureOnCommitCallbacks(execute=True)`` does (it is used underneath), so
    the intents really reach their executor. Let the scope end inside the block
    (wrap the whole request or the whole ``with airlock.scope()``).

    Example::

        with capture_on_commit(execute=True) as intents:
            self.client.post("/orders/", {"sku": "tea"})
        assert [intent.name for intent in intents] == ["send_confirmation"]

    .. versionadded:: 0.1
    """
    intents: list[Intent] = []
    try:
        with TestCase.captureOnCommitCallbacks(using=using, execute=execute) as callbacks:
            yield intents
    finally:
        for callback in callbacks:
            intents.extend(scheduled_intents(callback))


def waiting_for_commit(using: str = DEFAULT_DB_ALIAS) -> list[Intent]:
    """The intents flushed by a ``DjangoScope`` still waiting for ``using`` to commit, in order.

    .. versionadded:: 0.1
    """
    entries = connections[using].run_on_commit
    return [intent for entry in entries for intent in scheduled_intents(entry[1], released=False)]
