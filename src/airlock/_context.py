"""The per-unit-of-work state (context variables) and the few process-wide hooks."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn, final

from airlock._errors import PolicyEnqueueError

if TYPE_CHECKING:
    from airlock._intent import Intent
    from airlock._scope import Scope
    from airlock.typing import Policy

__all__ = ["PolicyGuard", "current", "flush_window", "hooks", "local_policies"]

# contextvars give each thread, asyncio task and (recent) greenlet its own value.
current: ContextVar[Scope | PolicyGuard | None] = ContextVar("airlock.scope", default=None)
local_policies: ContextVar[tuple[Policy, ...]] = ContextVar("airlock.local_policies", default=())
# The brokers that failed during the flush being released (id -> entry), opened fresh
# around each release so the queue executors' circuit breaker lasts one flush.
flush_window: ContextVar[dict[int, Any] | None] = ContextVar("airlock.flush_window", default=None)


@final
class PolicyGuard:
    """Stands in for the current scope while policies run, so they cannot enqueue."""

    __slots__ = ("scope",)

    def __init__(self, scope: Scope | None) -> None:
        self.scope = scope

    def _enqueue(self, *args: Any) -> NoReturn:
        raise PolicyEnqueueError(
            "a policy called airlock.enqueue(); policies judge intents, they never "
            "create them. Enqueue from the code that runs inside the scope instead."
        )


@final
class _Hooks:
    """Process-wide hooks that integrations switch on explicitly (and off again)."""

    __slots__ = ("capture_trace_context", "continue_trace", "executor_override", "inject_trace", "send_in_trace")

    def __init__(self) -> None:
        # Called at each enqueue; its return value becomes ``Intent.trace_context``.
        self.capture_trace_context: Callable[[], Any] | None = None
        # Replaces every scope's executor (``airlock.testing.capture`` records instead).
        self.executor_override: Callable[[Intent], Any] | None = None
        # Writes the current trace context into an outgoing message's carrier dict.
        self.inject_trace: Callable[[MutableMapping[str, Any]], None] | None = None
        # ``continue_trace(carrier, name=..., system=...)``: a context manager that makes
        # the carrier's trace context current around a worker-side task run.
        self.continue_trace: Callable[..., AbstractContextManager[Any]] | None = None
        # ``send_in_trace(carrier, name=..., system=..., intent_id=...)``: a context manager
        # around a publish that has no intent (the outbox relay's), which opens its send span
        # in the trace the carrier recorded at enqueue and makes it current for inject_trace.
        self.send_in_trace: Callable[..., AbstractContextManager[Any]] | None = None


hooks = _Hooks()
