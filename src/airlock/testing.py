"""Helpers for testing code that enqueues: see every intent and event, no broker needed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from airlock import _context, signals
from airlock._api import scope
from airlock._executors import sync_executor
from airlock._intent import Intent
from airlock._scope import Scope
from airlock._signal import Signal

__all__ = ["CapturedEvent", "Capture", "capture", "run_in_process"]

# A task that keeps enqueuing itself would make Capture.run() loop for ever.
_MAX_RUNS = 10_000


@dataclass(frozen=True)
class CapturedEvent:
    """One event seen during :func:`capture`: the signal's name, its sender and kwargs."""

    name: str
    sender: Any
    kwargs: dict[str, Any]


@dataclass
class Capture:
    """What :func:`capture` recorded, in the order it happened."""

    events: list[CapturedEvent] = field(default_factory=list)
    _ran: set[str] = field(default_factory=set, repr=False)

    def of(self, name: str) -> list[CapturedEvent]:
        """The events of one signal, e.g. ``capture.of("intent_dropped")``."""
        return [event for event in self.events if event.name == name]

    @property
    def names(self) -> list[str]:
        """The signal names, in order: handy for asserting a life cycle."""
        return [event.name for event in self.events]

    @property
    def enqueued(self) -> list[Intent]:
        """Every intent accepted into a scope."""
        return [event.kwargs["intent"] for event in self.of("intent_enqueued")]

    @property
    def dispatched(self) -> list[Intent]:
        """Every intent an executor accepted (or, with ``dispatch=False``, would have)."""
        return [event.kwargs["intent"] for event in self.of("intent_dispatched")]

    @property
    def dropped(self) -> list[Intent]:
        """Every intent a policy refused at flush."""
        return [event.kwargs["intent"] for event in self.of("intent_dropped")]

    @property
    def discarded(self) -> list[Intent]:
        """Every intent dropped with a discarded scope."""
        return [i for event in self.of("scope_discarded") for i in event.kwargs["intents"]]

    def assert_enqueued(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> Intent:
        """Assert that an intent named ``name`` was enqueued, and return it.

        ``args`` and ``kwargs``, when given, must equal the intent's exactly; left
        out, any arguments match. The failure message lists every intent that *was*
        enqueued, so a wrong name or argument shows at a glance.

        .. versionadded:: 0.1
        """
        expected_args = None if args is None else tuple(args)
        expected_kwargs = None if kwargs is None else dict(kwargs)
        for intent in self.enqueued:
            if (
                intent.name == name
                and (expected_args is None or intent.args == expected_args)
                and (expected_kwargs is None or intent.kwargs == expected_kwargs)
            ):
                return intent
        raise AssertionError(_not_enqueued_message(name, expected_args, expected_kwargs, self.enqueued))

    def run(self, intents: Iterable[Intent] | None = None) -> list[Intent]:
        """Run intents in this process, synchronously, and return them in the order run.

        By default it runs every dispatched intent not run yet, then those that the
        runs themselves dispatched, until none is left, as a worker would. Pass
        ``intents`` (``captured.enqueued``, say) to run exactly those instead.
        Each run is a plain :class:`~airlock.Scope` of its own, like a task run on
        a worker, so its follow-ups are captured too (and go out at its end, even
        inside a Django ``TestCase`` whose transaction never commits). See :func:`run_in_process` for how a task is
        called. A run that raises stops here, with the error.

        .. versionadded:: 0.1
        """
        if intents is not None:
            chosen = list(intents)
            for intent in chosen:
                self._run_one(intent)
            return chosen
        ran: list[Intent] = []
        while pending := [i for i in self.dispatched if i.id not in self._ran]:
            for intent in pending:
                if len(ran) >= _MAX_RUNS:
                    raise RuntimeError(
                        f"Capture.run() ran {_MAX_RUNS} intents and more keep coming (last: {intent}); "
                        "a task that enqueues itself never drains. Pass the intents to run explicitly."
                    )
                self._run_one(intent)
                ran.append(intent)
        return ran

    def _run_one(self, intent: Intent) -> None:
        self._ran.add(intent.id)
        _run_in_a_scope(intent)


def run_in_process(intent: Intent) -> Any:
    """Run the intent's task here and now, bypassing its queue, and return the result.

    A Huey task runs through ``call_local()`` and a Django ``Task`` through
    ``call()`` (calling them would enqueue or fail); anything else is called, as
    the sync executor does: Celery tasks and Dramatiq actors run their function
    locally when called.

    .. versionadded:: 0.1
    """
    task = intent.task
    call_local = getattr(task, "call_local", None)
    if callable(call_local):
        return call_local(*intent.args, **intent.kwargs)
    if not callable(task):
        return task.call(*intent.args, **intent.kwargs)
    return sync_executor(intent)


@contextmanager
def capture(*, dispatch: bool = False, eager: bool = False) -> Iterator[Capture]:
    """Record every airlock event inside the block.

    Args:
        dispatch: With the default ``False`` no executor runs: intents that would
            go out are recorded as dispatched (with ``result=None``) and nothing
            reaches a broker or runs a task. Pass ``True`` to dispatch for real
            while still recording.
        eager: ``True`` runs every intent that goes out in this process, at once,
            with :func:`run_in_process` inside a scope of its own, whatever executor
            its scope has (as Celery's ``task_always_eager`` does); nothing reaches
            a broker, and the runs are recorded as dispatches too.

    Example::

        with airlock.testing.capture() as captured:
            place_order(order_id=7)
        assert [i.name for i in captured.dispatched] == ["send_confirmation"]

    .. versionadded:: 0.1
    """
    recorded = Capture()
    receivers: list[tuple[Signal, Callable[..., None]]] = []
    for signal in signals.ALL:
        receiver = _recorder(recorded, signal.name)
        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    if dispatch and eager:
        raise ValueError("capture(dispatch=True, eager=True): choose one; eager runs tasks here, dispatch sends them")
    previous = _context.hooks.executor_override
    if eager:
        _context.hooks.executor_override = _run_in_a_scope
    elif not dispatch:
        _context.hooks.executor_override = _record_only
    try:
        yield recorded
    finally:
        _context.hooks.executor_override = previous
        for signal, receiver in receivers:
            signal.disconnect(receiver)


def _recorder(recorded: Capture, name: str) -> Callable[..., None]:
    def record(sender: Any, **kwargs: Any) -> None:
        recorded.events.append(CapturedEvent(name, sender, kwargs))

    return record


def _run_in_a_scope(intent: Intent) -> Any:
    # A worker runs each task in a scope of its own, so its follow-ups can be enqueued.
    # A plain Scope, not the configured class: a worker's run commits its own work, but
    # inside a test's transaction (Django's TestCase) a DjangoScope would hold them for
    # a commit that never comes.
    with scope(_cls=Scope):
        return run_in_process(intent)


def _record_only(intent: Intent) -> None:
    return None


def _not_enqueued_message(
    name: str, args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None, enqueued: list[Intent]
) -> str:
    wanted = name
    if args is not None or kwargs is not None:
        shown = [repr(a) for a in args or ()] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
        wanted = f"{name}({', '.join(shown)})"
        if args is None:
            wanted += " with any positional arguments"
        if kwargs is None:
            wanted += " with any keyword arguments"
    if not enqueued:
        return f"expected {wanted} to be enqueued, but nothing was enqueued"
    lines = "\n".join(f"  - {intent}" for intent in enqueued)
    return f"expected {wanted} to be enqueued; what was enqueued:\n{lines}"
