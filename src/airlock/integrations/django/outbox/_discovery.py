"""How the relay finds tasks: the way each queue's own worker does, before it resolves any name.

A relay is a process of its own. Nothing in it ran the code that imported the
tasks in the web process (a view, a model, a service), so a task is known to
it only if something imports its module at start-up, as the queue's worker
does:

- **Celery.** For every Celery app in the process, what ``celery worker`` runs
  at start-up: ``app.loader.import_default_modules()``, which fires the
  ``import_modules`` signal that ``app.autodiscover_tasks()`` hooks, then
  imports ``imports`` and ``include`` (``CELERY_IMPORTS`` with
  ``namespace="CELERY"``); then the app is finalized. The app itself must
  exist: the canonical layout imports it from the project package's
  ``__init__.py``.
- **Huey**, with ``huey.contrib.djhuey`` installed: the ``tasks`` module of
  every installed app, as ``manage.py run_huey`` loads them.
- **Dramatiq**, with ``django_dramatiq`` installed: the modules
  ``manage.py rundramatiq`` would hand to the ``dramatiq`` CLI
  (``DRAMATIQ_AUTODISCOVER_MODULES``, ``tasks`` by default).
- **Any queue**: ``OUTBOX["IMPORTS"]``, imported first and in order (they may
  set up the broker or create the app the rest needs): the modules you pass to
  the ``dramatiq`` CLI, or any module that registers tasks.

django-q2 functions and ``django.tasks`` tasks need none of it: the relay
resolves them through ``OUTBOX["TASKS"]``, which the options import.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]  # Django ships no type hints

from airlock.integrations.django.outbox._options import outbox_options

__all__ = ["Discovery", "TaskDiscoveryError", "discover_tasks", "is_installed", "project_package"]


class TaskDiscoveryError(ImproperlyConfigured):  # type: ignore[misc]  # Django's class is untyped
    """The relay could not import a module it must import at start-up; it does not start.

    .. versionadded:: 0.1
    """


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_tasks` imported in this process, by where it was told to.

    Attributes:
        imports: The modules of ``OUTBOX["IMPORTS"]``.
        celery_apps: The Celery apps (by ``main`` name) whose worker start-up ran.
        huey: The ``tasks`` modules djhuey's consumer would load.
        dramatiq: The task modules django_dramatiq's worker would load.

    .. versionadded:: 0.1
    """

    imports: tuple[str, ...] = ()
    celery_apps: tuple[str, ...] = ()
    huey: tuple[str, ...] = ()
    dramatiq: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line per source, for ``airlock_relay --check``."""
        found = [
            ("OUTBOX['IMPORTS']", self.imports),
            ("Celery apps (autodiscover_tasks, imports, include)", self.celery_apps),
            ("huey.contrib.djhuey tasks modules", self.huey),
            ("django_dramatiq task modules", self.dramatiq),
        ]
        return [f"{label}: {', '.join(names)}" for label, names in found if names]


class _Found:
    """What this process discovered so far; each queue's start-up runs once per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.imports: dict[str, None] = {}  # ordered set
        self.celery: weakref.WeakSet[Any] = weakref.WeakSet()
        self.celery_names: dict[str, None] = {}
        self.huey: tuple[str, ...] | None = None
        self.dramatiq: tuple[str, ...] | None = None


_found = _Found()


def discover_tasks() -> Discovery:
    """Import what the queues' workers would, so the relay resolves the names they register.

    Idempotent: each step runs once per process (a Celery app created later
    gets its own start-up on the next call), and a repeated call costs a few
    dictionary lookups. The relay calls it before its first claim, and
    ``airlock_relay --check`` before it looks at any row.

    Returns:
        Everything discovered in this process so far.

    Raises:
        TaskDiscoveryError: A module of ``OUTBOX["IMPORTS"]``, or one a queue's
            discovery imports, failed to import; the message names the setting
            and the module.

    .. versionadded:: 0.1
    """
    with _found.lock, _loggers_kept():
        for path in outbox_options()["IMPORTS"]:
            _import_listed(path)
        _celery()
        if _found.huey is None and is_installed("huey.contrib.djhuey"):
            _found.huey = _import_all(_app_modules(["tasks"]), "huey.contrib.djhuey (the 'tasks' of every app)")
        if _found.dramatiq is None and is_installed("django_dramatiq"):
            _found.dramatiq = _import_all(_dramatiq_modules(), "django_dramatiq (DRAMATIQ_AUTODISCOVER_MODULES)")
        return Discovery(
            imports=tuple(_found.imports),
            celery_apps=tuple(_found.celery_names),
            huey=_found.huey or (),
            dramatiq=_found.dramatiq or (),
        )


@contextlib.contextmanager
def _loggers_kept() -> Iterator[None]:
    """Keep enabled the loggers that are enabled now.

    Celery's Django fixup calls ``django.setup()`` again when an app imports its
    modules, and that runs ``LOGGING`` again: with ``disable_existing_loggers``
    (``dictConfig``'s default when the key is left out) it would silence every
    logger created since the first run, the relay's own among them.
    """
    enabled = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    try:
        yield
    finally:
        for logger in enabled:
            logger.disabled = False


def _import_listed(path: str) -> None:
    if path in _found.imports:
        return
    try:
        importlib.import_module(path)
    except Exception as error:
        raise TaskDiscoveryError(
            f"settings.AIRLOCK['OUTBOX']['IMPORTS'] lists {path!r}, which the relay could not import: "
            f"{type(error).__name__}: {error}"
        ) from error
    _found.imports[path] = None


def _celery() -> None:
    """Run each new Celery app's worker start-up: its autodiscovery, ``imports`` and ``include``."""
    state = sys.modules.get("celery._state")
    if state is None:  # nothing imported Celery, so there is no app to start
        return
    for app in list(state._get_active_apps()):
        if app in _found.celery:
            continue
        try:
            # What `celery worker` and `celery shell` call: the import_modules signal
            # (autodiscover_tasks, and the Django fixup's django.setup()), then imports/include.
            app.loader.import_default_modules()
            app.finalize()
        except Exception as error:
            raise TaskDiscoveryError(
                f"the Celery app {app.main!r} could not import its task modules (app.autodiscover_tasks(), "
                f"CELERY_IMPORTS, include) as its worker would: {type(error).__name__}: {error}"
            ) from error
        _found.celery.add(app)
        _found.celery_names[str(app.main or "default")] = None


def is_installed(app: str) -> bool:
    """Whether ``app`` is in ``INSTALLED_APPS`` (by its module path)."""
    from django.apps import apps  # type: ignore[import-untyped]

    return bool(apps.is_installed(app))


def _app_modules(names: Iterable[str]) -> list[str]:
    """``<app>.<name>`` for every installed app that has such a submodule."""
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule  # type: ignore[import-untyped]

    return [
        f"{config.name}.{name}"
        for config in apps.get_app_configs()
        for name in names
        if module_has_submodule(config.module, name)
    ]


def _dramatiq_modules() -> list[str]:
    """The modules ``manage.py rundramatiq`` passes to the ``dramatiq`` CLI, found by its own code."""
    try:
        from django_dramatiq.management.commands.rundramatiq import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            Command,
        )

        found: list[str] = list(Command(stdout=io.StringIO()).discover_tasks_modules())
    except (ImportError, AttributeError):  # another django_dramatiq version: the setting, as it reads it
        from django.conf import settings  # type: ignore[import-untyped]

        found = ["django_dramatiq.tasks", *_app_modules(getattr(settings, "DRAMATIQ_AUTODISCOVER_MODULES", ["tasks"]))]
    # django_dramatiq.setup runs django.setup() for the CLI's process; this one is set up.
    return [module for module in found if module != "django_dramatiq.setup"]


def _import_all(modules: list[str], source: str) -> tuple[str, ...]:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:
            raise TaskDiscoveryError(
                f"{module!r}, found by {source}, could not be imported by the relay: {type(error).__name__}: {error}"
            ) from error
    return tuple(modules)


def project_package() -> str | None:
    """The top package of ``DJANGO_SETTINGS_MODULE`` (``proj`` for ``proj.settings``), if it has one."""
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    package, dot, _ = settings_module.partition(".")
    return package if dot and package.isidentifier() else None
