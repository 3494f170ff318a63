"""Work that waits until a request's response has gone out.

``AirlockMiddleware`` opens a window around each request; inside it,
:func:`after_response` holds a callback back until Django closes the
response, which a WSGI or ASGI server does once it has sent the body. The
outbox's background publisher is handed its rows there, so that its work
(which holds the GIL while it builds messages) does not compete with the rest
of the request for the interpreter.

A streaming response runs the callbacks as soon as the middleware has it (its
body may take long to send); a request that raised runs them at once; a
response that is never closed (an outer middleware replaced it) runs them when
it is garbage collected. Outside a request, :func:`after_response` declines
and the caller does the work now.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

__all__ = ["NO_WINDOW", "after_response", "response_window", "run_after"]

_log = logging.getLogger("airlock.integrations.django")

_window: ContextVar[list[Callable[[], None]] | None] = ContextVar("airlock.after_response", default=None)


def after_response(callback: Callable[[], None]) -> bool:
    """Run ``callback`` once the current request's response is closed; ``False`` (not taken) outside a request."""
    held = _window.get()
    if held is None:
        return False
    held.append(callback)
    return True


class response_window:  # noqa: N801  (used as a function: ``with response_window() as held``)
    """The window of one request: ``with`` it, and hand what it held back to :func:`run_after`."""

    __slots__ = ("_token", "held")

    def __enter__(self) -> list[Callable[[], None]]:
        self.held: list[Callable[[], None]] = []
        self._token = _window.set(self.held)
        return self.held

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        _window.reset(self._token)
        if kind is not None:
            _Run(self.held)()  # no response will be closed: what was held back goes now


class _NoWindow:
    """For a scope that holds nothing back (no outbox): costs a request nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        return None


NO_WINDOW = _NoWindow()


def run_after(response: Any, held: list[Callable[[], None]] | None) -> None:
    """Run ``held`` when ``response`` is closed (at once if it streams, or cannot say when it closes)."""
    if not held:
        return
    run = _Run(held)
    closers = getattr(response, "_resource_closers", None)
    if getattr(response, "streaming", False) or not isinstance(closers, list):
        run()
        return
    closers.append(run)
    weakref.finalize(response, run)


class _Run:
    """The held callbacks, run once, in order, each failure logged (the others still run)."""

    __slots__ = ("callbacks",)

    def __init__(self, callbacks: list[Callable[[], None]]) -> None:
        self.callbacks = callbacks

    def __call__(self) -> None:
        callbacks = self.callbacks[:]
        self.callbacks.clear()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                _log.exception("airlock: work held until the response was closed failed")
