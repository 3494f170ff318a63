"""``AirlockMiddleware``: one scope per request."""

from __future__ import annotations

from typing import Any

import airlock

__all__ = ["AirlockMiddleware"]


class AirlockMiddleware:
    """Open a scope around each request (placeholder, being built).

    .. versionadded:: 0.1
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        with airlock.scope():
            return self.get_response(request)
