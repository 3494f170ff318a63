"""The background publisher: the outbox's fast path, off the request's path.

With ``FAST_PATH = "background"`` (the default), a committed scope hands its
ready rows to one publisher thread of this process and returns: the response
does not wait for the broker. The rows are already committed as ``ready``, so
the hand-off is only a shortcut: if the thread is slow, the broker is down, or
the process dies, the relay publishes them, and the intent id lets consumers
drop the rare duplicate.

- **Order.** The thread takes batches in the order they were handed over, and
  one scope's rows are one batch, so they go out in enqueue order.
- **Batching.** What is waiting is published in runs of up to ``BATCH_SIZE``
  rows, each over one connection per carrier, and marked ``sent`` in one
  ``UPDATE`` per database.
- **Bounded.** At most ``HANDOFF_LIMIT`` rows wait. A batch that does not fit
  is refused, and the caller publishes it inline (``handoff_full`` says so).
- **Forks.** A publisher belongs to the process that started it: a child
  (gunicorn ``--preload``, a Celery prefork child) starts its own on its first
  commit, and never publishes what the parent had queued.
- **Exit.** At interpreter exit (``atexit``; gunicorn and uvicorn turn SIGTERM
  into one), the publisher drains for at most ``DRAIN_TIMEOUT`` seconds; a
  process whose SIGTERM is unhandled gets the same drain before it dies.
  What is not published by then stays ``ready`` for the relay.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic, time
from typing import Any

from django.db import connections  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox import _own_connections
from airlock.integrations.django.outbox._markline import close_lines, confirm_lines
from airlock.integrations.django.outbox._models import SENT
from airlock.integrations.django.outbox._options import outbox_options
from airlock.integrations.django.outbox._publish import Message, Outcome, publish
from airlock.integrations.django.outbox._store import TABLE, for_ids, set_state
from airlock.signals.outbox import handoff_full

__all__ = [
    "Batch",
    "Publisher",
    "background_publisher",
    "drain_on_sigterm",
    "fast_path_sent",
    "hand_off",
    "publish_batches",
    "release",
    "settle",
]

_log = logging.getLogger("airlock.integrations.django.outbox")

# Called with each batch's commit-to-publish time in seconds (OutboxMetrics records them).
latency_observers: list[Callable[[float], None]] = []

# Rows the fast path of this process published, inline or in the publisher (a count
# only, so that it costs a process nothing to keep): drain_outbox() reports its share.
_fast_path_sent = 0
_tally = threading.Lock()


def fast_path_sent() -> int:
    """How many rows the fast path of this process has published so far."""
    return _fast_path_sent


class Batch:
    """One scope's ready rows, in enqueue order, on one database."""

    __slots__ = ("committed", "messages", "scope", "using")

    def __init__(self, scope: Any, using: str, messages: list[Message]) -> None:
        self.scope = scope
        self.using = using
        self.messages = messages
        self.committed = monotonic()


def settle(using: str, outcome: Outcome) -> None:
    """Mark what ``outcome`` sent as ``sent`` in one statement, and hand the rest to the relay now.

    A fast path's rows are written with ``available_at`` a ``FAST_PATH_DEADLINE``
    ahead, so a relay does not publish them while their writer is about to; what
    the writer could not publish becomes the relay's at once. A failure to mark
    leaves the rows to the relay, which publishes them again (consumers dedupe).
    """
    connection = connections[using]
    if outcome.sent:
        try:
            sent = [message.intent_id for message, _ in outcome.sent]
            set_state(connection, sent, SENT, lazy_flush=True, sent_at=time())
        except Exception:
            _log.exception(
                "airlock outbox: %d intent(s) were published but could not be marked sent on %r; "
                "the relay will publish them again (consumers dedupe by intent id)",
                len(outcome.sent),
                using,
            )
    left = [message.intent_id for message in outcome.untried] + [message.intent_id for message, _ in outcome.failed]
    if left:
        release(using, left)


def release(using: str, intent_ids: list[str]) -> None:
    """Let the relay take these ready rows at once (their writer will not publish them)."""
    # Their ready mark first (sent on the mark line without waiting): landing after this,
    # it would set their grace again.
    confirm_lines({using})
    with contextlib.suppress(Exception):  # if this fails too, the relay takes them after the grace
        for_ids(connections[using], f"UPDATE {TABLE} SET available_at = %s", [time()], intent_ids)


class Publisher:
    """This process's publisher thread and its bounded hand-off.

    A batch that would take the rows waiting over ``HANDOFF_LIMIT`` is refused.

    Args:
        report: Called in the thread with each batch's scope, outcome and start
            time (the scope's own reporting: signals and log lines).

    .. versionadded:: 0.1
    """

    def __init__(self, report: Callable[[Any, Outcome, float], None]) -> None:
        self.pid = os.getpid()
        self.published = 0  # rows this publisher sent
        self.overflowed = 0  # rows refused because the hand-off was full
        self._report = report
        self._ready = threading.Condition()
        self._batches: deque[Batch] = deque()
        self._queued = 0  # rows in _batches
        self._in_hand = 0  # rows the thread took and is publishing
        self._closed = False
        # Aliases whose connection (this thread's own) is tracked in _own_connections, with its closer.
        self._tracked: dict[str, Callable[[], None]] = {}
        self._chores: list[tuple[str, threading.Event]] = []  # connections the thread is asked to close
        self._thread = threading.Thread(target=self._run, name="airlock-outbox-publisher", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<airlock outbox Publisher pid={self.pid} depth={self.depth}>"

    @property
    def depth(self) -> int:
        """Rows handed over and not yet published (or given up to the relay)."""
        return self._queued + self._in_hand

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, batch: Batch) -> bool:
        """Queue ``batch``; ``False`` (nothing queued) if it does not fit or the publisher is closed."""
        rows = len(batch.messages)
        limit = outbox_options()["HANDOFF_LIMIT"]
        with self._ready:
            if self._closed or self._queued + self._in_hand + rows > limit:
                self.overflowed += rows
                return False
            self._batches.append(batch)
            self._queued += rows
            self._ready.notify()
        return True

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until nothing is waiting; whether that happened."""
        end = monotonic() + timeout
        with self._ready:
            while self._queued or self._in_hand:
                left = end - monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._ready.wait(left)
        return True

    def close(self, timeout: float) -> bool:
        """Drain for up to ``timeout`` seconds, then stop; what is left stays ready for the relay."""
        drained = self.drain(timeout)
        close_lines()  # their last answers read (a refused mark is made again), then closed
        with self._ready:
            self._closed = True
            left = self._queued + self._in_hand
            self._batches.clear()
            self._queued = 0
            self._ready.notify_all()
        if left:
            _log.warning("airlock outbox: %d intent(s) left for the relay at exit", left)
        return drained

    def close_connection(self, alias: str, timeout: float) -> None:
        """Publish what is waiting, then have the thread close its connection to ``alias`` (within ``timeout``).

        Called right before a test database is dropped (``_own_connections``):
        the connection belongs to the publisher's thread, which alone may close
        it; its next batch on ``alias`` opens a new one.
        """
        if self.pid != os.getpid():
            return  # a fork's child: the thread and its connection are the parent's
        end = monotonic() + timeout
        self.drain(timeout)
        done = threading.Event()
        with self._ready:
            self._tracked.pop(alias, None)
            if self._closed or not self._thread.is_alive():
                return  # the thread closed its connections as it ended
            self._chores.append((alias, done))
            self._ready.notify_all()
        done.wait(max(end - monotonic(), 0.0))

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            connections.close_all()  # this thread's own connections
            with self._ready:
                chores, self._chores = self._chores, []
            for _alias, done in chores:
                done.set()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._batches and not self._closed and not self._chores:
                    self._ready.wait()
                if self._closed:
                    return
                chores, self._chores = self._chores, []
            for alias, done in chores:
                with contextlib.suppress(Exception):
                    connections[alias].close()
                done.set()
            with self._ready:
                if not self._batches:
                    continue
                # A run takes up to BATCH_SIZE rows (at least one batch), so that its
                # FAST_PATH_DEADLINE only ever cuts short a broker that is slow, not a long queue.
                batches: list[Batch] = []
                rows, most = 0, outbox_options()["BATCH_SIZE"]
                while self._batches and (not batches or rows + len(self._batches[0].messages) <= most):
                    batch = self._batches.popleft()
                    batches.append(batch)
                    rows += len(batch.messages)
                self._queued -= rows
                self._in_hand = rows
            try:
                with _publishing:  # a fork waits for this run (see _before_fork)
                    self._publish(batches)
            except Exception:  # the rows are ready in the database: the relay has them
                _log.exception("airlock outbox: the background publisher failed; the relay will publish its rows")
            finally:
                with self._ready:
                    self._in_hand = 0
                    idle = not self._batches
                    self._ready.notify_all()
                if idle:
                    aliases = {batch.using for batch in batches}
                    # The ready marks' answers (a refused one is made again). Only when idle:
                    # under load the next request's mark reads the last answer anyway.
                    confirm_lines(aliases)
                    _drop_broken(aliases)

    def _publish(self, batches: list[Batch]) -> None:
        new: dict[str, Callable[[], None]] = {}
        with self._ready:
            for using in {batch.using for batch in batches} - self._tracked.keys():
                # This thread is about to hold a connection to it, which Django's test runner does not know of.
                new[using] = functools.partial(self.close_connection, using, outbox_options()["DRAIN_TIMEOUT"])
            self._tracked.update(new)
        for using, close in new.items():
            _own_connections.track(using, close)
        outcome = publish_batches(batches, self._report, on_sent=_observe_latency)
        if outcome is not None:
            self.published += len(outcome.sent)


def publish_batches(
    batches: list[Batch],
    report: Callable[[Any, Outcome, float], None],
    *,
    on_sent: Callable[[Batch, float], None] | None = None,
) -> Outcome | None:
    """One fast-path run, inline or in the publisher: the batches in order, over one connection per carrier.

    Within ``FAST_PATH_DEADLINE``; a broker found unreachable pauses the fast path
    for ``FAST_PATH_PAUSE`` (during which a run hands everything to the relay at
    once, and returns ``None``). Each batch's rows are then settled on its
    database and reported to its scope; ``on_sent(batch, done)`` is called for
    each batch that sent something.
    """
    options = outbox_options()
    if monotonic() < options.paused_until:
        _log.info(
            "airlock outbox: the broker was unreachable moments ago; %d intent(s) left for the relay",
            sum(len(batch.messages) for batch in batches),
        )
        for batch in batches:
            release(batch.using, [message.intent_id for message in batch.messages])
        return None
    started = monotonic()
    messages = [message for batch in batches for message in batch.messages]
    senders = {id(message): batch.scope for batch in batches for message in batch.messages}
    outcome = publish(
        messages, deadline=started + options["FAST_PATH_DEADLINE"], sender=lambda message: senders.get(id(message))
    )
    if outcome.unreachable is not None:
        # One run pays for finding the broker down, not every request.
        options.paused_until = monotonic() + options["FAST_PATH_PAUSE"]
    done = monotonic()
    if outcome.sent:
        _count_sent(len(outcome.sent))
    parts = [outcome] if len(batches) == 1 else _parts_of(outcome, batches)
    for using in dict.fromkeys(batch.using for batch in batches):  # one UPDATE per database
        settle(using, _joined([part for part, batch in zip(parts, batches, strict=True) if batch.using == using]))
    for batch, part in zip(batches, parts, strict=True):
        if part.sent and on_sent is not None:
            on_sent(batch, done)
        report(batch.scope, part, started)
    return outcome


def _count_sent(rows: int) -> None:
    global _fast_path_sent
    with _tally:  # inline fast paths of several request threads
        _fast_path_sent += rows


def _observe_latency(batch: Batch, done: float) -> None:
    for observe in latency_observers:
        observe(done - batch.committed)


def _drop_broken(aliases: set[str]) -> None:
    """Close this thread's connections that saw an error and no longer work; keep the rest open.

    The publisher is one long-lived thread, so it keeps its connection as a
    persistent one (``CONN_MAX_AGE`` is about request threads): reconnecting for
    every commit would put a connection set-up between each commit and its publish.
    """
    for using in aliases:
        connection = connections[using]
        with contextlib.suppress(Exception):
            if connection.connection is not None and connection.errors_occurred:
                if connection.is_usable():
                    connection.errors_occurred = False
                else:
                    connection.close()


def _parts_of(outcome: Outcome, batches: list[Batch]) -> list[Outcome]:
    """Each batch's share of one run's outcome, in the batches' order."""
    parts = [Outcome(unreachable=outcome.unreachable) for _ in batches]
    owner = {id(message): parts[n] for n, batch in enumerate(batches) for message in batch.messages}
    for pair in outcome.sent:
        owner[id(pair[0])].sent.append(pair)
    for pair in outcome.failed:
        owner[id(pair[0])].failed.append(pair)
    for message in outcome.untried:
        owner[id(message)].untried.append(message)
    return parts


def _joined(parts: list[Outcome]) -> Outcome:
    """The outcomes of several batches on one database, as one (to mark them in one statement)."""
    if len(parts) == 1:
        return parts[0]
    return Outcome(
        sent=[pair for part in parts for pair in part.sent],
        failed=[pair for part in parts for pair in part.failed],
        untried=[message for part in parts for message in part.untried],
    )


_publisher: Publisher | None = None
_lock = threading.Lock()


def background_publisher() -> Publisher | None:
    """This process's background publisher, or ``None`` if it has not started (or this is a fork).

    .. versionadded:: 0.1
    """
    publisher = _publisher
    if publisher is None or publisher.pid != os.getpid():
        return None
    return publisher


def hand_off(batch: Batch, report: Callable[[Any, Outcome, float], None]) -> bool:
    """Give ``batch`` to this process's publisher (starting it); ``False`` if it is full."""
    global _publisher
    publisher = background_publisher()
    if publisher is None:
        with _lock:
            publisher = background_publisher()
            if publisher is None:
                publisher = _publisher = Publisher(report)
                _drain_at_exit(publisher)
    if publisher.submit(batch):
        return True
    if handoff_full.receivers:
        handoff_full.emit(batch.scope, rows=len(batch.messages), depth=publisher.depth)
    return False


def _drain_at_exit(publisher: Publisher) -> None:
    def at_exit() -> None:
        if background_publisher() is publisher:
            publisher.close(outbox_options()["DRAIN_TIMEOUT"])

    atexit.register(at_exit)
    drain_on_sigterm()


def drain_on_sigterm() -> bool:
    """Make a SIGTERM left at its default (death) drain the publisher first; whether it now does.

    Servers that handle SIGTERM themselves (gunicorn, uvicorn, Celery) exit
    through ``atexit``, which drains too. Only the main thread can set a signal
    handler, so the app calls this from ``ready()``: a server whose first commit
    happens on another thread (``runserver``) is covered as well.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with contextlib.suppress(ValueError, OSError):
        current = signal.getsignal(signal.SIGTERM)
        if current is _drain_then_die:
            return True
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _drain_then_die)
            return True
    return False


def _drain_then_die(number: int, frame: Any) -> None:
    publisher = background_publisher()
    if publisher is not None:
        publisher.close(outbox_options()["DRAIN_TIMEOUT"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


# Held by the publisher thread while it publishes, and by a fork while it forks.
_publishing = threading.Lock()
_held_for_fork = False


def _before_fork() -> None:
    """Let a publish in progress finish before a fork (bounded by FAST_PATH_DEADLINE).

    A fork in the middle of one copies a half-done state into the child: a
    module the thread was importing for the broker (kombu's transport, say) is
    left half-initialised in the child's ``sys.modules``, and every publish of
    that child fails. An idle publisher costs a fork nothing.
    """
    global _held_for_fork
    if background_publisher() is None:
        return
    try:
        wait = outbox_options()["FAST_PATH_DEADLINE"] + 1.0
    except Exception:  # settings unusable mid-fork: do not block the fork on them
        wait = 1.0
    _held_for_fork = _publishing.acquire(timeout=wait)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _publishing.release()


def _forget_in_child() -> None:
    global _publisher, _lock, _publishing, _held_for_fork, _tally
    _publisher = None
    _lock = threading.Lock()  # the parent's may have been held by another thread at the fork
    _tally = threading.Lock()
    _publishing = threading.Lock()
    _held_for_fork = False


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_forget_in_child)
