"""Checking ``_dispatch_options`` names, shared by the queue executors."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["reject_unknown_options"]


def reject_unknown_options(
    executor: str, options: Mapping[str, Any], known: Collection[str], task: str, takes: str
) -> None:
    """Raise ``TypeError`` when ``options`` holds a name outside ``known``.

    Queue libraries tend to accept any keyword and store it on the message, so a
    typo such as ``dealy`` would otherwise be dropped without a word. The error
    names each unknown option with the closest known one, and ends with ``takes``.
    """
    unknown = options.keys() - set(known)
    if not unknown:
        return
    hints = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"{executor}: unknown _dispatch_options {', '.join(hints)} for {task}; {takes}")
