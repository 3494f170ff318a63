"""The Celery executor: send each intent as a Celery task message.

``celery_executor`` calls ``task.apply_async(args=..., kwargs=..., **options)`` for a
Celery task, ``task.delay(*args, **kwargs)`` for anything that only has
``delay``, and calls a plain function in-process. ``_dispatch_options`` become
``apply_async`` options, checked by name first so a typo fails loudly instead of
turning into a message property nobody reads.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from contextvars import ContextVar
from typing import Any, final

try:
    from celery import Celery  # type: ignore[import-untyped]  # Celery ships no type hints
    from celery.app.task import Task  # type: ignore[import-untyped]
    from kombu.exceptions import OperationalError
    from kombu.pools import ProducerPool
    from kombu.serialization import dumps as kombu_dumps
    from kombu.serialization import loads as kombu_loads
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "airlock.integrations.executors.celery needs Celery: pip install 'airlock-dispatch[celery]'"
    ) from error

from airlock._context import hooks
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._propagation import inject
from airlock.integrations.executors import _deadline
from airlock.integrations.executors._checks import check_arguments, is_plain, snapshot
from airlock.integrations.executors._deadline import DEFAULT_PUBLISH_TIMEOUT
from airlock.integrations.executors._options import reject_unknown_options

__all__ = ["CELERY_OPTIONS", "celery_executor", "make_celery_executor", "publishing"]


def _parameters(function: Any, *, leave_out: set[str]) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    } - leave_out


# Every name ``apply_async`` really uses. Celery passes leftover keywords on as
# AMQP message properties without complaint, so the list is explicit: the named
# parameters of ``Task.apply_async`` and ``Celery.send_task`` (read from the
# installed Celery, so new ones are accepted), the options the message builder and
# router read, and kombu's publish arguments and standard message properties.
# ``args``/``kwargs`` come from the intent; the others left out are set by Celery itself.
CELERY_OPTIONS: frozenset[str] = frozenset(
    _parameters(Task.apply_async, leave_out={"self", "args", "kwargs"})
    | _parameters(Celery.send_task, leave_out={"self", "name", "args", "kwargs", "result_cls", "task_type"})
    | {
        # the message (celery.app.amqp.AMQP.as_task_v2)
        "origin",
        "argsrepr",
        "kwargsrepr",
        "stamped_headers",
        "ignore_result",
        # routing and publishing (AMQP.send_task_message, kombu.Producer.publish)
        "queue",
        "exchange",
        "exchange_type",
        "routing_key",
        "priority",
        "serializer",
        "compression",
        "delivery_mode",
        "headers",
        "retry",
        "retry_policy",
        "declare",
        "timeout",
        "confirm_timeout",
        "mandatory",
        "immediate",
        "event_dispatcher",
        # standard AMQP message properties
        "content_type",
        "content_encoding",
        "correlation_id",
        "message_id",
        "user_id",
        "app_id",
        "expiration",
    }
)
"""The ``_dispatch_options`` names :func:`celery_executor` accepts.

.. versionadded:: 0.1
"""

# The open ``publishing()`` block, if any.
_batch: ContextVar[_Batch | None] = ContextVar("airlock.celery.batch", default=None)

# Set while the executor hands a message to Celery, so the migration shim
# (airlock.integrations.celery) lets that call through to the real apply_async.
passthrough: ContextVar[bool] = ContextVar("airlock.celery.passthrough", default=False)


def celery_executor(intent: Intent) -> Any:
    """Send the intent through Celery and return what Celery hands back.

    Each publish waits at most about :data:`DEFAULT_PUBLISH_TIMEOUT` seconds
    (see :func:`make_celery_executor` for another bound, and
    :func:`~airlock.integrations.executors.publish_timeout` for one per block).

    - A task with ``apply_async`` (any Celery task or signature-like object):
      ``task.apply_async(args=intent.args, kwargs=intent.kwargs, **options)``, by
      keyword as airlock-py calls it (tests that assert the call on a mock keep
      passing); the
      ``AsyncResult`` travels on ``intent_dispatched`` as ``result``.
    - Else a task with ``delay``: ``task.delay(*args, **kwargs)`` (no options possible).
    - Else a plain callable: called in-process, like the sync executor.

    ``_dispatch_options`` are Celery's own ``apply_async`` options (``countdown``,
    ``eta``, ``expires``, ``queue``, ``priority``, ``headers``, ...; see
    :data:`CELERY_OPTIONS`). When a tracing integration is on, the current trace
    context is added to the message ``headers`` (your own ``headers`` win on a clash).

    Raises:
        TypeError: An option name Celery does not take, or options for a task
            that only has ``delay()``.

    .. versionadded:: 0.1
    """
    return _dispatch(intent, DEFAULT_PUBLISH_TIMEOUT)


def make_celery_executor(*, timeout: float = DEFAULT_PUBLISH_TIMEOUT) -> Callable[[Intent], Any]:
    """A :func:`celery_executor` whose publishes give up after ``timeout`` seconds.

    The bound is set on the connections the executor publishes over (kombu's
    connect timeout, Redis's socket timeouts, AMQP's read and write timeouts),
    with kombu's and Celery's publish retries off: one attempt, plus one on a
    fresh connection when a pooled one turns out to be closed. After a broker
    cannot be reached, the other intents of the flush for it fail at once
    (see :class:`~airlock.integrations.executors.BrokerUnavailableError`).

    Args:
        timeout: Seconds, above 0.

    Raises:
        ValueError: ``timeout`` is not a positive number.

    .. versionadded:: 0.1
    """
    return _deadline.with_timeout(_dispatch, timeout, "make_celery_executor", celery_executor)


def _dispatch(intent: Intent, timeout: float) -> Any:
    task = intent.task
    options = intent.dispatch_options
    if options:
        _check_options(options, intent)
    apply_async = getattr(task, "apply_async", None)
    if apply_async is None:
        delay = getattr(task, "delay", None)
        if delay is None:
            return sync_executor(intent)
        if options:
            _refuse_options_for_delay(intent, options)
        return _send(delay, *intent.args, **intent.kwargs)
    options = _with_trace_headers(options)
    app = getattr(task, "app", None)
    if (
        app is not None
        and hasattr(app, "connection_for_write")
        and not (options and ("producer" in options or "connection" in options))
        and not app.conf.task_always_eager  # the task runs here: nothing to publish
    ):
        timeout = _deadline.timeout_for(timeout)
        return _deadline.guarded(
            app,
            timeout,
            intent.name,
            lambda: _publish(app, apply_async, intent, options, timeout),
            _is_unreachable,
        )
    if options:
        return _send(apply_async, args=intent.args, kwargs=intent.kwargs, **options)
    return _send(apply_async, args=intent.args, kwargs=intent.kwargs)


def _check_at_enqueue(intent: Intent) -> Intent | None:
    """``celery_executor.check_enqueue``: options, arguments and their snapshot, at enqueue.

    The arguments must fit the task's signature (unless the task sets
    ``typing = False``) and survive the serializer the message will use (the
    ``serializer`` option, else the task's, else Celery's ``task_serializer``),
    through kombu's own encoder. What comes back from it is what is sent.
    """
    task = intent._task
    options = intent.dispatch_options
    if getattr(task, "apply_async", None) is None:
        if options and getattr(task, "delay", None) is not None:
            _refuse_options_for_delay(intent, options)
        return None  # called in-process, like the sync executor
    if options:
        _check_options(options, intent)
    run = task.run if isinstance(task, Task) else None
    if run is not None and getattr(task, "typing", True):
        check_arguments("celery_executor", intent, run)
    if is_plain(intent):
        return None
    serializer = (options and options.get("serializer")) or getattr(task, "serializer", None) or "json"
    return snapshot("celery_executor", intent, _round_trip(serializer), serializer, run)


celery_executor.check_enqueue = _check_at_enqueue  # type: ignore[attr-defined]

_round_trips: dict[str, Callable[[Any], Any]] = {}


def _round_trip(serializer: str) -> Callable[[Any], Any]:
    """Encode and decode with kombu's serializer registry, as Celery does with a message body."""
    round_trip = _round_trips.get(serializer)
    if round_trip is None:

        def round_trip(data: Any) -> Any:
            content_type, encoding, body = kombu_dumps(data, serializer=serializer)  # type: ignore[no-untyped-call]
            return kombu_loads(body, content_type, encoding, force=True)  # type: ignore[no-untyped-call]

        _round_trips[serializer] = round_trip
    return round_trip


def _refuse_options_for_delay(intent: Intent, options: Mapping[str, Any]) -> None:
    raise TypeError(
        f"{intent.name} has .delay() but no .apply_async(), so its "
        f"_dispatch_options {sorted(options)} cannot be passed; drop them or use a Celery task"
    )


def _send(method: Any, /, *args: Any, **options: Any) -> Any:
    token = passthrough.set(True)
    try:
        return method(*args, **options)
    finally:
        passthrough.reset(token)


def _with_trace_headers(options: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if hooks.inject_trace is None:
        return options
    carrier: dict[str, Any] = {}
    inject(carrier)
    if not carrier:
        return options
    if options is None:
        return {"headers": carrier}
    return {**options, "headers": {**carrier, **(options.get("headers") or {})}}


def _check_options(options: Mapping[str, Any], intent: Intent) -> None:
    if not options.keys() - CELERY_OPTIONS:
        return
    # Stamps (Celery's canvas stamping) are named by the ``stamped_headers`` option.
    stamps = set(options.get("stamped_headers") or ())
    reject_unknown_options(
        "celery_executor",
        {name: value for name, value in options.items() if name not in stamps},
        CELERY_OPTIONS,
        intent.name,
        "Celery's apply_async takes countdown, eta, expires, queue, priority, headers, ... "
        "(see airlock.integrations.executors.celery.CELERY_OPTIONS)",
    )


# Publishing goes over producer pools of our own, one per app and timeout, whose
# connections carry the timeouts: changing the app's own pool would change what
# its workers do too. Each entry keeps its app alive, so the id cannot be reused.
_pools: dict[tuple[int, float], tuple[Any, Any, tuple[type[BaseException], ...]]] = {}
_pools_lock = threading.Lock()


def _forget_pools_in_child() -> None:
    """A fork keeps neither the parent's pools nor its lock.

    The lock too: a thread of the parent (the outbox's background publisher, say)
    may have held it at the fork, and a child inherits it locked, with no thread
    left to release it. gunicorn ``--preload`` forks right after the app imports.
    """
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_in_child)

# One attempt: Celery's publish retry (task_publish_retry) would try again for
# seconds, and kombu's reconnect loop (max_retries) for as long as connect_timeout.
_NO_RETRY: Mapping[str, Any] = {"retry": False}


def _producer_pool(app: Any, timeout: float) -> tuple[Any, tuple[type[BaseException], ...]]:
    entry = _pools.get((id(app), timeout))
    if entry is None or entry[0] is not app:
        with _pools_lock:
            entry = _pools.get((id(app), timeout))
            if entry is None or entry[0] is not app:
                entry = _pools[(id(app), timeout)] = _new_pool(app, timeout)
    return entry[1], entry[2]


def _new_pool(app: Any, timeout: float) -> tuple[Any, Any, tuple[type[BaseException], ...]]:
    connection = app.connection_for_write(
        connect_timeout=timeout,
        transport_options={
            "max_retries": 0,  # kombu's ensure_connection: one attempt
            "socket_timeout": timeout,  # Redis
            "socket_connect_timeout": timeout,
            "read_timeout": timeout,  # AMQP
            "write_timeout": timeout,
        },
    )
    limit = app.conf.broker_pool_limit
    pool = ProducerPool(connection.Pool(limit=limit), limit=limit, Producer=app.amqp.Producer)  # type: ignore[no-untyped-call]
    global _connection_errors
    errors = (OSError, OperationalError, *connection.recoverable_connection_errors)
    _connection_errors = tuple(dict.fromkeys(_connection_errors + errors))
    return app, pool, errors


def _publish(app: Any, apply_async: Any, intent: Intent, options: Mapping[str, Any] | None, timeout: float) -> Any:
    pool, errors = _producer_pool(app, timeout)
    batch = _batch.get()
    options = {**_NO_RETRY, **options} if options else _NO_RETRY
    args, kwargs = intent.args, intent.kwargs
    try:
        if batch is not None:
            return batch.send(pool, apply_async, args, kwargs, options)
        with pool.acquire(block=True, timeout=app.conf.broker_pool_acquire_timeout) as producer:
            return _send_on(producer, apply_async, args, kwargs, options)
    except Exception as error:
        # A pooled connection the broker closed since it was last used (a restart,
        # an idle timeout): kombu replaced it, so try once more on a fresh one.
        # Never after a timeout, which would double the wait.
        if not _deadline.any_cause(error, errors) or _deadline.is_timeout(error) or _is_refused(error):
            raise
    with pool.acquire(block=True, timeout=app.conf.broker_pool_acquire_timeout) as producer:
        return _send_on(producer, apply_async, args, kwargs, options)


def _send_on(producer: Any, apply_async: Any, args: Any, kwargs: Any, options: Mapping[str, Any]) -> Any:
    try:
        return _send(apply_async, args=args, kwargs=kwargs, **options, producer=producer)
    except Exception as error:
        _drop_if_timed_out(producer, error)
        raise


def _drop_if_timed_out(producer: Any, error: BaseException) -> None:
    """Drop the connection of a publish that timed out, without a closing handshake.

    kombu's pool replaces a connection that raised by closing it, and on AMQP
    closing is a conversation: ``channel.close`` and ``connection.close`` each
    wait for the broker's reply. A broker that stopped answering (frozen, or
    behind a dead link) makes each wait the full socket timeout, so one publish
    took three timeouts. A connection that timed out is of no further use:
    dropping it (kombu's ``collect()``, no I/O) keeps the publish to one.
    """
    if not _deadline.is_timeout(error):
        return
    connection = getattr(producer, "__connection__", None)
    if connection is not None:
        with suppress(Exception):
            connection.collect()


def _is_unreachable(error: BaseException) -> bool:
    return _deadline.any_cause(error, _connection_errors) and not _is_refused(error)


def _is_refused(error: BaseException) -> bool:
    """Whether the broker answered, refusing this one message (a publisher-confirm nack).

    py-amqp files ``MessageNacked`` under its recoverable *connection* errors, so
    kombu raises it as ``OperationalError``, like a broker that is down. It is
    not: the broker is up and said no to this message (a full queue with
    ``x-overflow: reject-publish``, say), and the next message may well go.
    """
    return _REFUSALS is not None and _deadline.any_cause(error, _REFUSALS)


try:
    from amqp.exceptions import MessageNacked as _MessageNacked  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - py-amqp comes with Celery's default transport
    _REFUSALS: tuple[type[BaseException], ...] | None = None
else:
    _REFUSALS = (_MessageNacked,)


# Errors that mean "the broker cannot be reached": sockets, kombu's wrapper, and
# the connection errors of every transport a pool was made for.
_connection_errors: tuple[type[BaseException], ...] = (OSError, OperationalError)


@contextmanager
def buffered_publishing() -> Iterator[Callable[[], None]]:
    """``publishing()`` whose Redis publishes wait in one pipeline until the ``flush`` it yields.

    For the outbox, which marks a row sent only after its message was pushed:
    it calls ``flush()`` before it marks anything, and a ``flush()`` that raises
    means that every message since the last one may or may not have arrived
    (their rows stay ready, and a second delivery has the same task id). Not
    for the executor's own callers, to whom a returned ``AsyncResult`` means
    "published". On a transport that cannot buffer (AMQP), each message is sent
    before ``apply_async`` returns and ``flush()`` has nothing to do.
    """
    with _batching(_Batch(buffered=True)) as batch:
        yield batch.flush


@contextmanager
def _batching(batch: _Batch) -> Iterator[_Batch]:
    """``batch`` is where ``celery_executor`` publishes inside the block; its producers go back after."""
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
        batch.close()


@final
class _Batch:
    """The producers a ``publishing()`` block borrowed, one per producer pool."""

    __slots__ = ("_broken", "_buffered", "_held", "_lost")

    def __init__(self, *, buffered: bool = False) -> None:
        self._held: dict[int, tuple[Any, Any, ExitStack, Any]] = {}
        self._broken: set[int] = set()
        self._buffered = buffered
        self._lost: BaseException | None = None  # a push of earlier messages failed: flush() raises it

    def send(self, pool: Any, apply_async: Any, args: Any, kwargs: Any, options: Any) -> Any:
        key = id(pool)
        if key in self._broken:
            with pool.acquire(block=True) as producer:
                return _send_on(producer, apply_async, args, kwargs, options)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = self._borrow(pool, self._buffered)
        try:
            return _send(apply_async, args=args, kwargs=kwargs, **options, producer=held[1])
        except Exception as error:
            self._give_back(key, held, error, push=self._buffered)
            raise

    def _give_back(
        self, key: int, held: tuple[Any, Any, ExitStack, Any], error: BaseException, *, push: bool = False
    ) -> None:
        window = held[3]
        if push and window is not None:
            # The window holds earlier messages whose callers were told "buffered"; leaving the
            # batch on an error discards them (kombu), so they are pushed first. If that fails
            # too, the next flush() raises: their rows stay ready instead of being marked sent.
            try:
                window.flush()
            except Exception as lost:
                self._lost = self._lost or lost
        _drop_if_timed_out(held[1], error)
        # Give the producer back (kombu replaces its connection) and publish
        # the rest of the block one producer at a time, as without publishing().
        self._broken.add(key)
        del self._held[key]
        held[2].__exit__(type(error), error, error.__traceback__)

    @staticmethod
    def _borrow(pool: Any, buffered: bool) -> tuple[Any, Any, ExitStack, Any]:
        stack = ExitStack()
        producer = stack.enter_context(pool.acquire(block=True))
        # kombu 5.7+ can keep one Redis client for many publishes. A batch of one
        # command still sends each message before apply_async returns, so a
        # failure belongs to the intent that caused it, as without a batch.
        # Buffered, the pipeline is pushed only by flush() (kombu's own limit is
        # never reached), so the caller knows which messages a failure covers.
        window = None
        if getattr(producer, "supports_batch_publish", False):
            window = stack.enter_context(producer.batch(max_size=1_000_000_000 if buffered else 1))
        return pool, producer, stack, window

    def flush(self) -> None:
        """Push what every held producer buffered; raise (and stop using that producer) if one fails."""
        lost, self._lost = self._lost, None
        if lost is not None:
            raise lost
        for key, held in list(self._held.items()):
            window = held[3]
            if window is None:  # a transport that cannot buffer sent each message already
                continue
            try:
                window.flush()
            except Exception as error:
                self._give_back(key, held, error)
                raise

    def close(self) -> None:
        held, self._held = self._held, {}
        for _pool, _producer, stack, _window in held.values():
            stack.__exit__(None, None, None)


@contextmanager
def publishing() -> Iterator[None]:
    """Publish the messages ``celery_executor`` sends in the block over one producer per app.

    Without it every message borrows a producer (and, on Redis, a client) from
    the app's pool and gives it back. Inside it, the first message for an app
    borrows one and keeps it until the block ends, which makes a large flush
    publish markedly faster. What is sent does not change: each intent is still
    its own message, sent before the executor returns, with its own
    ``AsyncResult`` on its own ``intent_dispatched`` event. If a publish fails, the
    block stops reusing the producer and Celery's usual path (with its publish
    retry policy) takes over. Wrap the scope in it, so its flush happens inside::

        with publishing(), airlock.scope(executor=celery_executor):
            ...

    ``AirlockTask`` does this for its own scope.

    .. versionadded:: 0.1
    """
    with _batching(_Batch()):
        yield
