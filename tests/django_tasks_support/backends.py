"""A backend with neither priorities nor deferral, for the enqueue-time checks."""

from __future__ import annotations

from django.tasks.backends.immediate import ImmediateBackend


class PlainBackend(ImmediateBackend):
    supports_priority = False
    supports_defer = False
