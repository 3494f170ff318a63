"""How long a queue executor may wait for its broker, and when it stops trying.

Two things bound a flush to a broker that is down, slow or frozen:

- **A publish timeout.** Each queue executor sets a connect and a socket timeout
  on the queue library's own connection options (and turns its hidden retry loops
  off), so one publish gives up after about ``timeout`` seconds instead of waiting
  forever. The default is :data:`DEFAULT_PUBLISH_TIMEOUT`; an executor made with
  ``make_..._executor(timeout=...)`` has its own, and a ``publish_timeout()`` block
  overrides both for what is dispatched inside it.
- **A circuit breaker.** After a publish fails because the broker cannot be
  reached, the next intents for that broker fail at once with
  :class:`BrokerUnavailableError` instead of each paying the timeout again. Each
  of them still fails (and is reported on ``dispatch_failed``): nothing is skipped.
  Inside a ``flush_window()`` block the breaker lasts until the block ends;
  outside one, it closes again ``timeout`` seconds after the failure, so a later
  flush tries the broker again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from airlock import _context
from airlock._errors import AirlockError

__all__ = [
    "DEFAULT_PUBLISH_TIMEOUT",
    "BrokerUnavailableError",
    "flush_window",
    "publish_timeout",
]

DEFAULT_PUBLISH_TIMEOUT = 2.0
"""Seconds one publish may wait to connect, and then for each reply, by default.

.. versionadded:: 0.1
"""

T = TypeVar("T")


class BrokerUnavailableError(AirlockError, ConnectionError):
    """An intent was not sent because its broker failed earlier in the same flush.

    ``__cause__`` is that first failure. Retry the intent once the broker is back.

    .. versionadded:: 0.1
    """


_override: ContextVar[float | None] = ContextVar("airlock.publish_timeout", default=None)


@contextmanager
def publish_timeout(seconds: float) -> Iterator[None]:
    """Bound every publish dispatched in the block to ``seconds``.

    It overrides the executor's own timeout (and the default), for a scope whose
    flush must not wait as long as the others, or may wait longer::

        with publish_timeout(0.5), airlock.scope(executor=celery_executor):
            ...

    Args:
        seconds: A positive number of seconds.

    Raises:
        ValueError: ``seconds`` is not a positive number.

    .. versionadded:: 0.1
    """
    token = _override.set(checked_timeout(seconds, "publish_timeout()"))
    try:
        yield
    finally:
        _override.reset(token)


def checked_timeout(seconds: object, where: str) -> float:
    """``seconds`` as a float, or a ``ValueError`` naming ``where`` and the fix."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(
            f"{where} takes a timeout in seconds, a number above 0, got {seconds!r}; "
            f"the default is {DEFAULT_PUBLISH_TIMEOUT}"
        )
    return float(seconds)


def with_timeout(
    dispatch: Callable[[Any, float], Any], timeout: float, factory: str, template: Callable[..., Any]
) -> Callable[[Any], Any]:
    """An executor that calls ``dispatch(intent, timeout)``, named and checked like ``template``."""
    bound = checked_timeout(timeout, f"{factory}(timeout=...)")

    def executor(intent: Any) -> Any:
        return dispatch(intent, bound)

    executor.__name__ = executor.__qualname__ = template.__name__
    executor.__doc__ = template.__doc__
    executor.timeout = bound  # type: ignore[attr-defined]
    check = getattr(template, "check_enqueue", None)
    if check is not None:
        executor.check_enqueue = check  # type: ignore[attr-defined]
    return executor


def timeout_for(own: float) -> float:
    """The timeout in force: a ``publish_timeout()`` block's, else the executor's own."""
    override = _override.get()
    return own if override is None else override


# A breaker is a plain dict: id(broker) -> (broker, first error, when), so that the
# core can open a window (a fresh dict) around each flush without importing this
# module. It uses ``airlock._context.flush_window`` when the core has one.
_Failed = dict[int, tuple[object, BaseException, float]]
_window: ContextVar[_Failed | None] = getattr(_context, "flush_window", None) or ContextVar(
    "airlock.flush_window", default=None
)
# Outside any window: failures remembered for one timeout, across threads.
_recent: _Failed = {}


def _check(failed: _Failed, broker: object, timeout: float, task: str, *, expires: bool) -> None:
    entry = failed.get(id(broker))
    if entry is None or entry[0] is not broker:
        return
    if expires and time.monotonic() - entry[2] >= timeout:
        failed.pop(id(broker), None)  # closed again: the next publish tries the broker
        return
    raise BrokerUnavailableError(
        f"{task} was not sent: its broker failed earlier in this flush "
        f"({type(entry[1]).__name__}: {entry[1]}). Retry it when the broker is reachable."
    ) from entry[1]


@contextmanager
def flush_window() -> Iterator[None]:
    """Scope the circuit breaker to the block: one flush, or one task run.

    A broker that fails inside the block stays failed until the block ends, and
    a broker that failed before it is tried again. Open one around a flush (or
    several flushes that should count as one); without one, a failed broker is
    skipped for one timeout after its failure.

    .. versionadded:: 0.1
    """
    token = _window.set({})
    try:
        yield
    finally:
        _window.reset(token)


def guarded(
    broker: object,
    timeout: float,
    task: str,
    send: Callable[[], T],
    is_unreachable: Callable[[BaseException], bool],
) -> T:
    """Call ``send()`` unless ``broker`` already failed, and remember it if it fails now.

    A failure that ``is_unreachable`` says is about reaching the broker trips the
    breaker; any other error (a serialisation error, a bad option) is only raised.
    """
    window = _window.get()
    failed = _recent if window is None else window
    if failed:
        _check(failed, broker, timeout, task, expires=window is None)
    try:
        return send()
    except Exception as error:
        if is_unreachable(error):
            # setdefault is atomic: of two threads failing at once, the first error stays.
            failed.setdefault(id(broker), (broker, error, time.monotonic()))
        raise


def is_timeout(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a socket timeout."""
    # redis-py's TimeoutError is not the builtin one; kombu wraps both.
    return any(isinstance(seen, TimeoutError) or type(seen).__name__ == "TimeoutError" for seen in causes(error))


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from, nearest first."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def any_cause(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``error`` or an error it was raised from is one of ``kinds``."""
    return any(isinstance(seen, kinds) for seen in causes(error))


def bound_redis_pool(pool: Any, timeout: float, *, reading: float = 0.0) -> None:
    """Give a redis-py connection pool our timeouts and no retries, once per timeout.

    ``reading`` is added to the socket timeout for pools whose owner blocks on
    reads of that length (Huey's consumer waits ``read_timeout`` on BRPOP).
    Connections already made are closed, so that they reconnect with the new values.
    """
    if getattr(pool, "_airlock_timeout", None) == timeout:
        return
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs = pool.connection_kwargs
    kwargs["socket_connect_timeout"] = timeout
    kwargs["socket_timeout"] = timeout + reading
    # redis-py's client default retries three times with a backoff: a hidden loop.
    no_retry = Retry(NoBackoff(), 0)
    kwargs["retry"] = no_retry
    kwargs.pop("retry_on_timeout", None)
    for name in ("_available_connections", "_in_use_connections"):
        for connection in list(getattr(pool, name, ())):
            connection.socket_connect_timeout = timeout
            connection.socket_timeout = timeout + reading
            connection.retry = no_retry
            if name == "_available_connections":
                connection.disconnect()
    pool._airlock_timeout = timeout
