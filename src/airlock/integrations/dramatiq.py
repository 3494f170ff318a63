"""Dramatiq integration: each message's run is an airlock scope.

Add :class:`AirlockMiddleware` to the broker (``broker.add_middleware(AirlockMiddleware())``)
and every actor runs inside a fresh scope: what it enqueues goes out only after
the actor returns, and is dropped when it raises (which includes ``dramatiq.Retry``
and every failure the Retries middleware will retry), is skipped, or times out. A
retried message runs again with a new scope, so follow-up tasks are sent once, by
the run that succeeds.

Follow-up actors go out as Dramatiq messages of their own (``dramatiq_executor``)
by default. To send them another way, give the middleware an executor
(``AirlockMiddleware(executor=...)``) or configure one
(``airlock.configure(executor=...)``); the middleware's wins.
"""

from __future__ import annotations

from contextlib import ExitStack
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, final

try:
    import dramatiq
    from dramatiq.broker import MessageProxy
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.dramatiq needs Dramatiq: pip install 'airlock-dispatch[dramatiq]'"
    ) from error

import airlock
from airlock._propagation import continue_trace
from airlock.integrations._task_run import executor_for_run
from airlock.integrations.executors.dramatiq import TRACE_OPTION, dramatiq_executor

if TYPE_CHECKING:
    from collections.abc import Callable

    from airlock._intent import Intent
    from airlock._scope import Scope
    from airlock.typing import Policy

__all__ = ["TRACE_OPTION", "AirlockMiddleware", "dramatiq_executor"]


@final
class _Run:
    """The scope of one message being processed, and what closes its trace."""

    __slots__ = ("scope", "trace")

    def __init__(self, scope: Scope, trace: ExitStack) -> None:
        self.scope = scope
        self.trace = trace


class AirlockMiddleware(dramatiq.Middleware):
    """Run every message's actor inside an airlock scope.

    ``before_process_message`` enters the scope (inside the trace carried by the
    message, when tracing is on); ``after_process_message`` flushes it when the
    actor returned and discards it when it raised; ``after_skip_message`` discards
    it. Add it last (``broker.add_middleware(AirlockMiddleware())``, the default
    position), so the scope wraps the actor as tightly as possible and is settled
    before the Retries middleware re-enqueues a failed message.

    Each worker thread processes one message at a time, so the running scope is
    kept in a context variable: the scope is isolated per thread, and an
    ``async def`` actor sees it too (Dramatiq runs the coroutine with a copy of
    the worker thread's context).

    A flush runs after the actor has succeeded, so a dispatch error cannot fail
    the message any more: it is reported on ``airlock.signals.dispatch_failed``
    and logged by Dramatiq.

    Args:
        policy: The scope's policy (default: ``airlock.configure(policy=...)``).
        executor: How follow-ups go out (default: ``airlock.configure(executor=...)``,
            else ``dramatiq_executor``).
        **scope_kwargs: Passed on to ``airlock.scope()`` (e.g. ``_cls=``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        executor: Callable[[Intent], Any] | None = None,
        **scope_kwargs: Any,
    ) -> None:
        self.policy = policy
        self.executor = executor
        self.scope_kwargs = scope_kwargs
        self._run: ContextVar[_Run | None] = ContextVar(f"airlock.dramatiq.run.{id(self):x}", default=None)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        trace = ExitStack()
        trace.enter_context(
            continue_trace(message.options.get(TRACE_OPTION), name=message.actor_name, system="dramatiq")
        )
        try:
            executor = executor_for_run(self.executor, dramatiq_executor)
            scope = airlock.scope(self.policy, executor=executor, **self.scope_kwargs)
            scope.enter()
        except BaseException:
            trace.close()
            raise
        self._run.set(_Run(scope, trace))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._settle(exception, flush=exception is None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._settle(None, flush=False)

    def _settle(self, error: BaseException | None, *, flush: bool) -> None:
        run = self._run.get()
        if run is None:
            # An earlier middleware skipped the message before this one entered a scope.
            return
        self._run.set(None)
        with run.trace:
            scope = run.scope
            scope.exit()
            if flush and scope.should_flush(error):
                scope.flush()
            else:
                scope.discard(error)
