"""Helpers shared by the Dramatiq and Huey glue tests."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from airlock import _context


def stub_tracing(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Switch trace propagation on with stand-ins; returns what the worker side continued.

    The executor's carrier gets ``traceparent=00-abc-01``; each ``continue_trace``
    on the worker side records ``(carrier, name, system)``.
    """
    continued: list[tuple[Any, ...]] = []

    @contextmanager
    def continue_trace(carrier: Any, *, name: str, system: str) -> Iterator[None]:
        continued.append((dict(carrier), name, system))
        yield

    monkeypatch.setattr(_context.hooks, "inject_trace", lambda carrier: carrier.update(traceparent="00-abc-01"))
    monkeypatch.setattr(_context.hooks, "continue_trace", continue_trace)
    return continued


def import_without(monkeypatch: pytest.MonkeyPatch, library: str, module: str, siblings: tuple[str, ...]) -> None:
    """Import ``module`` afresh as if ``library`` were not installed (it must raise)."""
    for name in [name for name in sys.modules if name == library or name.startswith(f"{library}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in siblings:
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.import_module(module)
