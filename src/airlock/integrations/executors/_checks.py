"""What the queue executors check when an intent is enqueued (their ``check_enqueue``).

A mistake a queue would only report at dispatch (after a ``DjangoScope``'s commit,
where it can only be logged) is caught by ``airlock.enqueue()`` instead, while the
caller's transaction is open and nothing is buffered:

- the arguments against the task's signature (cached per task);
- the arguments against the serializer the queue will use, whose round trip is
  also the snapshot that is sent, so that changing an argument after
  ``enqueue()`` cannot change the message.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from airlock._intent import Intent, with_arguments

__all__ = ["check_arguments", "is_plain", "snapshot"]

# Values that every serializer encodes and nobody can mutate: nothing to check
# or copy. The common case (``enqueue(task, order.pk)``) costs one pass over them.
_ATOMS = frozenset({int, str, float, bool, type(None), bytes})

# Per task: the task (kept, so that its id stays its own), its signature (None
# where there is none to check against), and the call shapes (how many positional
# arguments, which keywords) that already fit it. Binding costs microseconds; a
# shape seen before costs a set lookup.
_signatures: dict[int, tuple[object, inspect.Signature | None, set[object]]] = {}
_MAX_REMEMBERED = 4096
_MAX_SHAPES = 64


def check_arguments(
    executor: str, intent: Intent, function: Callable[..., Any] | None, *, injected: tuple[str, ...] = ()
) -> None:
    """Raise ``TypeError`` when the intent's arguments do not fit ``function``'s signature.

    ``injected`` names keywords the queue adds itself when it calls the task
    (Huey's ``task=`` for ``context=True``).
    """
    task = intent._task
    args, kwargs = intent._args, intent._kwargs
    remembered = _signatures.get(id(task))
    if remembered is None or remembered[0] is not task:
        if len(_signatures) >= _MAX_REMEMBERED:
            _signatures.clear()  # tasks made on the fly: forget rather than grow
        remembered = _signatures[id(task)] = (task, _signature(function), set())
    signature, shapes = remembered[1], remembered[2]
    shape = (len(args), *kwargs) if kwargs else len(args)
    if signature is None or shape in shapes:
        return
    try:
        signature.bind(*args, **({**kwargs, **dict.fromkeys(injected)} if injected else kwargs))
    except TypeError as error:
        raise TypeError(
            f"{executor}: {intent.name}{_plain(signature)} cannot be called with {_call(intent)}: "
            f"{error}{_closest(error, signature)}; enqueue it with the arguments its signature takes"
        ) from None
    if len(shapes) < _MAX_SHAPES:
        shapes.add(shape)


def is_plain(intent: Intent) -> bool:
    """Whether every argument is a value no serializer refuses and nobody can mutate."""
    atoms = _ATOMS
    for value in intent._args:
        if type(value) not in atoms:
            return False
    for value in intent._kwargs.values():  # two plain loops cost less than all() over generators
        if type(value) not in atoms:
            return False
    return True


def _signature(function: Callable[..., Any] | None) -> inspect.Signature | None:
    if function is None:
        return None
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or a C callable: nothing to read
        return None


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """The signature without annotations, which ``from __future__ import annotations`` makes strings."""
    empty = inspect.Parameter.empty
    return signature.replace(
        parameters=[parameter.replace(annotation=empty) for parameter in signature.parameters.values()],
        return_annotation=empty,
    )


def _closest(error: TypeError, signature: inspect.Signature) -> str:
    text = str(error)
    marker = "unexpected keyword argument '"
    if marker not in text:
        return ""
    name = text.split(marker, 1)[1].rstrip("'")
    close = difflib.get_close_matches(name, list(signature.parameters), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _call(intent: Intent) -> str:
    parts = [type(value).__name__ for value in intent._args]
    parts += [f"{name}=<{type(value).__name__}>" for name, value in intent._kwargs.items()]
    return f"({', '.join(parts)})"


def snapshot(
    executor: str,
    intent: Intent,
    round_trip: Callable[[tuple[tuple[Any, ...], dict[str, Any]]], Any],
    serializer: str,
    function: Callable[..., Any] | None = None,
) -> Intent:
    """The intent with its arguments as the worker will get them.

    ``round_trip`` encodes ``(args, kwargs)`` with the queue's serializer and
    decodes the result. When it fails, the error names the first argument that
    cannot be encoded (by its parameter name, read from ``function``) and the fix.
    Callers skip it when :func:`is_plain` says there is nothing to encode or copy.
    """
    try:
        new_args, new_kwargs = round_trip((intent._args, intent._kwargs))
    except Exception as error:
        raise _unencodable(executor, intent, round_trip, serializer, function, error) from error
    return with_arguments(intent, tuple(new_args), dict(new_kwargs))


def _unencodable(
    executor: str,
    intent: Intent,
    round_trip: Callable[[tuple[tuple[Any, ...], dict[str, Any]]], Any],
    serializer: str,
    function: Callable[..., Any] | None,
    error: Exception,
) -> TypeError:
    names = _parameter_names(function)
    culprits: list[tuple[str, Any]] = [
        (f"argument {names[index]!r}" if index < len(names) else f"positional argument {index + 1}", value)
        for index, value in enumerate(intent._args)
    ]
    culprits += [(f"keyword argument {name!r}", value) for name, value in intent._kwargs.items()]
    # Only together (a shared reference a serializer refuses, say) if none alone.
    label, value = "the arguments", None
    for culprit in culprits:
        try:
            round_trip(((culprit[1],), {}))
        except Exception as own:
            (label, value), error = culprit, own
            break
    return TypeError(
        f"{executor}: {intent.name}'s {label} is {_a(value)}, which the queue's {serializer} "
        f"serializer cannot encode ({type(error).__name__}: {error}); {_fix(label, value)}"
    )


def _parameter_names(function: Callable[..., Any] | None) -> list[str]:
    signature = _signature(function)
    if signature is None:
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, parameter in signature.parameters.items() if parameter.kind in positional]


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _fix(label: str, value: Any) -> str:
    name = label.split("'")[1] if "'" in label else "it"
    if hasattr(value, "pk") and hasattr(value, "_meta"):
        return f"pass {name}.pk, not the model instance, and load it in the task"
    if isinstance(value, (set, frozenset)):
        return f"pass a list (sorted({name})), not a set"
    if isinstance(value, Mapping):
        return "pass a dict of plain values (str, int, float, bool, None, lists and dicts of them)"
    return "pass plain data instead (str, int, float, bool, None, lists and dicts of them), e.g. an id"
