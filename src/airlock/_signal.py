"""airlock's own ``blinker.Signal``: ordered, cached, and safe against observers."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Generator, Iterator
from inspect import iscoroutinefunction
from typing import Any

import blinker
from blinker._utilities import make_id
from blinker.base import ANY_ID

__all__ = ["Signal"]

_log = logging.getLogger("airlock")

Receiver = Callable[..., Any]


class Signal(blinker.Signal):
    """A blinker signal that calls receivers in connection order, cheaply.

    Differences from :class:`blinker.Signal`, all confined to this subclass:

    - Receivers run in the order they were connected (blinker leaves it undefined).
    - The list of receivers for the common case (everyone listens to any sender)
      is cached between connects and disconnects, so a send costs one loop.
    - A receiver that raises is an *observer* failure: the exception is logged on
      the ``airlock`` logger with its traceback and the remaining receivers still
      run, so a broken observer can never lose or reorder intents. Only the
      exception types named in ``passthrough`` escape (``PolicyViolation`` on
      :data:`~airlock.signals.intent_enqueued`, which is how a receiver vetoes).
    - airlock's own behaviour (policy checks, dispatch through the executor) is
      attached as *core* receivers, kept apart from ``receivers``: they cannot be
      disconnected or muted by accident, and ``if signal.receivers:`` stays the
      cheap "is anybody observing?" check.

    ``connect``, ``connect_via``, ``connected_to``, ``disconnect``, ``muted``,
    ``send`` and ``receivers`` behave as in blinker.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        name: str,
        doc: str | None = None,
        *,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> None:
        super().__init__(doc)
        self.name = name
        self._passthrough = passthrough
        self._core_before: tuple[Receiver, ...] = ()
        self._core_after: tuple[Receiver, ...] = ()
        self._cache: Any = None

    def __repr__(self) -> str:
        return f"<airlock signal {self.name!r}>"

    # -- connection bookkeeping --------------------------------------------

    def connect(self, receiver: Any, sender: Any = blinker.ANY, weak: bool = True) -> Any:
        if iscoroutinefunction(receiver):
            raise TypeError(
                f"{receiver!r} is an async function, but airlock sends {self.name!r} "
                "synchronously, from inside enqueue() and flush(): connect a plain "
                "function (it may schedule work on your event loop itself)"
            )
        result = super().connect(receiver, sender, weak)
        self._cache = None
        return result

    def _disconnect(self, receiver_id: Any, sender_id: Any) -> None:
        super()._disconnect(receiver_id, sender_id)
        self._cache = None

    def _attach_core(self, receiver: Receiver, *, before_observers: bool) -> None:
        """Attach one of airlock's own receivers (not part of the public API)."""
        if before_observers:
            self._core_before += (receiver,)
        else:
            self._core_after += (receiver,)

    def receivers_for(self, sender: Any) -> Generator[Receiver, None, None]:
        """Yield the live receivers for ``sender``, in the order they were connected."""
        if not self.receivers:
            return
        any_ids = self._by_sender[ANY_ID]
        sender_ids = self._by_sender.get(make_id(sender), ())
        for receiver_id, receiver in list(self.receivers.items()):
            if receiver_id not in any_ids and receiver_id not in sender_ids:
                continue
            if isinstance(receiver, weakref.ref):
                strong = receiver()
                if strong is None:
                    self._disconnect(receiver_id, ANY_ID)
                    continue
                yield strong
            else:
                yield receiver

    def _observers(self, sender: Any) -> Iterator[Receiver]:
        """The receivers to call for ``sender``: from the cache in the common case."""
        cache = self._cache
        if cache is None:
            cache = self._cache = self._build_cache()
        if cache is _SENDER_SPECIFIC:
            yield from self.receivers_for(sender)
            return
        for receiver, weak in cache:
            if weak:
                receiver = receiver()
                if receiver is None:  # collected; blinker's cleanup callback disconnects it
                    continue
            yield receiver

    def _build_cache(self) -> Any:
        if len(self._by_sender.get(ANY_ID, ())) != len(self.receivers):
            return _SENDER_SPECIFIC
        return tuple((receiver, isinstance(receiver, weakref.ref)) for receiver in self.receivers.values())

    # -- sending ------------------------------------------------------------

    def send(
        self,
        sender: Any | None = None,
        /,
        *,
        _async_wrapper: Any = None,
        **kwargs: Any,
    ) -> list[tuple[Receiver, Any]]:
        """Call airlock's own receivers, then every observer, and return the observers' results.

        An observer that raises is logged on the ``airlock`` logger and its
        result is the exception; the others still run.
        """
        results: list[tuple[Receiver, Any]] = []
        for core in self._core_before:
            core(sender, **kwargs)  # airlock's own receivers accept ``intent`` by keyword too
        if not self.is_muted and self.receivers:
            for receiver in self._observers(sender):
                results.append((receiver, self._call(receiver, sender, kwargs)))
        for core in self._core_after:
            core(sender, **kwargs)
        return results

    def emit(self, sender: Any, /, **kwargs: Any) -> None:
        """``send`` without collecting results: the path airlock itself uses."""
        for core in self._core_before:
            core(sender, **kwargs)
        if self.receivers and not self.is_muted:
            self._notify(sender, kwargs)
        for core in self._core_after:
            core(sender, **kwargs)

    def emit_intent(self, sender: Any, intent: Any) -> None:
        """``emit(sender, intent=intent)`` for per-intent events, the hottest path.

        airlock's own receivers of per-intent signals take ``(scope, intent)``
        positionally; the observer loop is ``_notify``'s, inlined to save a call per intent.
        """
        for core in self._core_before:
            core(sender, intent)
        if self.receivers and not self.is_muted:
            cache = self._cache
            if cache is None or cache is _SENDER_SPECIFIC:
                self._notify(sender, {"intent": intent})
            else:
                for receiver, weak in cache:
                    if weak:
                        receiver = receiver()
                        if receiver is None:
                            continue
                    try:
                        receiver(sender, intent=intent)
                    except self._passthrough:
                        raise
                    except Exception:
                        self._report(receiver)
        for core in self._core_after:
            core(sender, intent)

    def _notify(self, sender: Any, kwargs: dict[str, Any]) -> None:
        cache = self._cache
        if cache is None:
            cache = self._cache = self._build_cache()
        if cache is _SENDER_SPECIFIC:
            cache = [(receiver, False) for receiver in self.receivers_for(sender)]
        for receiver, weak in cache:
            if weak:
                receiver = receiver()
                if receiver is None:  # collected; blinker's cleanup disconnects it
                    continue
            try:
                receiver(sender, **kwargs)
            except self._passthrough:
                raise
            except Exception:
                self._report(receiver)

    def _call(self, receiver: Receiver, sender: Any, kwargs: dict[str, Any]) -> Any:
        try:
            return receiver(sender, **kwargs)
        except self._passthrough:
            raise
        except Exception as error:
            self._report(receiver)
            return error

    def _report(self, receiver: Receiver) -> None:
        _log.exception(
            "airlock: receiver %r of signal %r raised; the error was logged and ignored, and the intents carry on",
            receiver,
            self.name,
        )


_SENDER_SPECIFIC = object()
