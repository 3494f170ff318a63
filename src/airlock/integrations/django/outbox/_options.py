"""``settings.AIRLOCK["OUTBOX"]``: ``True``, or a dict of the options below."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, final

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]  # Django ships no type hints
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

__all__ = ["DEFAULTS", "OutboxOptions", "configure_outbox", "outbox_options"]

DEFAULTS: dict[str, Any] = {
    # After the commit, the process that wrote the rows publishes them: "background" (a
    # publisher thread; the response does not wait), "inline" (before the response), or "off"
    # (the relay does it all). True means the default, False means "off".
    "FAST_PATH": "background",
    "FAST_PATH_DEADLINE": 2.0,  # seconds the fast path may spend; the rest is left to the relay
    "FAST_PATH_PAUSE": 5.0,  # seconds the fast path leaves everything to the relay after a broker failure
    "HANDOFF_LIMIT": 10_000,  # rows waiting for the background publisher; past it a request publishes inline
    "DRAIN_TIMEOUT": 5.0,  # seconds the background publisher may drain at exit; the rest is left to the relay
    # PostgreSQL with psycopg 3 and a fast path: a request's ready mark goes out on a connection
    # of the process's own without waiting for the answer (one more connection per process).
    "MARK_LINE": True,
    "BATCH_SIZE": 200,  # rows a relay claims at once
    "LEASE": 60.0,  # seconds a claim lasts; a relay that died is replaced after it
    "MAX_ATTEMPTS": 8,  # real failures before a row is dead-lettered
    "BACKOFF": 2.0,  # seconds before the first retry; doubled each time, with jitter
    "BACKOFF_MAX": 600.0,
    "HOLD_AFTER": 300.0,  # seconds a row may wait for its scope's decision before it is held
    # What the relay does with the pending rows of a writer process that died before its scope
    # decided (their transaction committed): "deliver" them, or "hold" them for a person.
    "UNDECIDED": "deliver",
    "POLL": 1.0,  # seconds an idle relay sleeps between looks
    "PROGRESS_EVERY": 60.0,  # seconds between the relay's progress lines (0: none)
    # Seconds the relay keeps sent rows and processed-intent records; it deletes older ones
    # itself, in small batches. None keeps them (then run airlock_purge yourself).
    "RETENTION": 604800.0,
    "DATABASES": None,  # aliases the relay serves (default: every alias in settings.DATABASES)
    "TASKS": (),  # dotted paths of tasks resolved by name (django-q2, django.tasks)
    "HUEY": (),  # dotted paths of Huey instances whose registries the relay reads
    # Dotted module paths the relay imports at start-up, before it resolves any task (the
    # modules you pass to the dramatiq CLI, or any module registering tasks); never imported here.
    "IMPORTS": (),
}


@final
class OutboxOptions:
    """The checked options, with ``TASKS`` and ``HUEY`` imported (from settings, never from rows)."""

    __slots__ = ("enabled", "huey", "paused_until", "tasks", "values")

    def __init__(self, enabled: bool, values: dict[str, Any], tasks: dict[str, Any], huey: list[Any]) -> None:
        self.enabled = enabled
        self.values = values
        self.tasks = tasks
        self.huey = huey
        # The monotonic time until which the fast path leaves everything to the relay.
        self.paused_until = 0.0

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


_current: OutboxOptions | None = None


def configure_outbox(value: Any) -> OutboxOptions:
    """Check and remember ``AIRLOCK["OUTBOX"]`` (``True``, ``False``, ``None`` or a dict)."""
    global _current
    if value is None or isinstance(value, bool):
        enabled, given = bool(value), {}
    elif isinstance(value, Mapping):
        enabled, given = True, dict(value)
    else:
        raise ImproperlyConfigured(
            f"settings.AIRLOCK['OUTBOX'] must be True, False or a dict of options; got {value!r}"
        )
    unknown = [key for key in given if key not in DEFAULTS]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key).upper(), DEFAULTS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ImproperlyConfigured(
            f"settings.AIRLOCK['OUTBOX'] has unknown option(s) {', '.join(hints)}; "
            f"the options are {', '.join(DEFAULTS)}"
        )
    values = {**DEFAULTS, **given}
    for key, default in DEFAULTS.items():
        if key == "RETENTION":  # may be None; checked below
            continue
        if isinstance(default, float) and not (isinstance(values[key], (int, float)) and values[key] >= 0):
            raise ImproperlyConfigured(
                f"settings.AIRLOCK['OUTBOX'][{key!r}] must be a number of seconds >= 0; got {values[key]!r}"
            )
    retention = values["RETENTION"]
    # Not 0: a processed-intent record must outlive any redelivery of its intent, or it drops nothing.
    if retention is not None and not (
        isinstance(retention, (int, float)) and not isinstance(retention, bool) and retention > 0
    ):
        raise ImproperlyConfigured(
            "settings.AIRLOCK['OUTBOX']['RETENTION'] must be a number of seconds > 0 (e.g. 7 * 86400, the "
            f"default), or None to keep sent rows and processed-intent records; got {retention!r}"
        )
    values["FAST_PATH"] = _fast_path(values["FAST_PATH"])
    if values["UNDECIDED"] not in UNDECIDED:
        close = difflib.get_close_matches(str(values["UNDECIDED"]), UNDECIDED, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ImproperlyConfigured(
            "settings.AIRLOCK['OUTBOX']['UNDECIDED'] must be 'deliver' (send the committed rows of a writer "
            f"that died before its scope decided) or 'hold' (keep them for a person); got {values['UNDECIDED']!r}{hint}"
        )
    if not isinstance(values["MARK_LINE"], bool):
        raise ImproperlyConfigured(
            f"settings.AIRLOCK['OUTBOX']['MARK_LINE'] must be True or False; got {values['MARK_LINE']!r}"
        )
    for key in ("BATCH_SIZE", "MAX_ATTEMPTS", "HANDOFF_LIMIT"):
        if not (isinstance(values[key], int) and values[key] >= 1):
            raise ImproperlyConfigured(f"settings.AIRLOCK['OUTBOX'][{key!r}] must be an int >= 1; got {values[key]!r}")
    tasks = {path: _imported("TASKS", path) for path in _paths("TASKS", values["TASKS"])}
    huey = [_imported("HUEY", path) for path in _paths("HUEY", values["HUEY"])]
    values["IMPORTS"] = tuple(_paths("IMPORTS", values["IMPORTS"]))  # imported by the relay only
    _current = OutboxOptions(enabled, values, tasks, huey)
    return _current


def outbox_options() -> OutboxOptions:
    """The options in force: those last configured, else read from settings now."""
    if _current is None:
        from django.conf import settings  # type: ignore[import-untyped]

        return configure_outbox((getattr(settings, "AIRLOCK", None) or {}).get("OUTBOX"))
    return _current


FAST_PATHS = ("background", "inline", "off")
UNDECIDED = ("deliver", "hold")


def _fast_path(value: Any) -> str:
    if value is True:
        return "background"
    if value is False or value is None:
        return "off"
    if value in FAST_PATHS:
        return str(value)
    close = difflib.get_close_matches(str(value), FAST_PATHS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ImproperlyConfigured(
        f"settings.AIRLOCK['OUTBOX']['FAST_PATH'] must be 'background', 'inline' or 'off'; got {value!r}{hint}"
    )


def _paths(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not all(isinstance(path, str) for path in value):
        raise ImproperlyConfigured(f"settings.AIRLOCK['OUTBOX'][{key!r}] must be a list of dotted paths; got {value!r}")
    return list(value)


def _imported(key: str, path: str) -> Any:
    try:
        return import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"settings.AIRLOCK['OUTBOX'][{key!r}] lists {path!r}, which does not import ({error})"
        ) from error
