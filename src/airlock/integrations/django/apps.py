"""The Django app: ``"airlock.integrations.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

from django.apps import AppConfig  # type: ignore[import-untyped]  # Django ships no type hints
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from airlock.integrations.django._settings import configure_from_settings
from airlock.integrations.django.checks import defer_settings_error

__all__ = ["AirlockConfig"]


class AirlockConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """Configures airlock from ``settings.AIRLOCK`` when Django starts.

    A bad ``AIRLOCK`` setting raises ``ImproperlyConfigured`` here, at start-up,
    rather than on the first request; under ``manage.py check`` it is reported
    as a system-check error instead (``airlock.E003``, ``airlock.E004``).

    .. versionadded:: 0.1
    """

    name = "airlock.integrations.django"
    label = "airlock"
    verbose_name = "airlock"

    def ready(self) -> None:
        try:
            configure_from_settings()
        except ImproperlyConfigured as error:
            if not is_check_command():
                raise
            # `manage.py check` lists it with the other checks' findings, without a
            # traceback; nothing is applied, and the process only checks.
            defer_settings_error(error)
            return
        options = sys.modules.get("airlock.integrations.django.outbox._options")
        if options is not None and options.outbox_options().enabled:
            from airlock.integrations.django.outbox._background import drain_on_sigterm

            if options.outbox_options()["FAST_PATH"] == "background":
                drain_on_sigterm()  # here, on the main thread, whichever thread commits first
        if find_spec("django.tasks") is not None:
            # Django 6: every run of a django.tasks task is a scope (docs/django_tasks.md).
            from airlock.integrations.django_tasks import connect

            connect()


def is_check_command(argv: list[str] | None = None) -> bool:
    """Whether this process is ``manage.py check`` (or ``django-admin check``, ``python -m django check``).

    Django sets the apps up before it looks at the command, so ``ready()`` can
    only tell from the command line, where the subcommand is always the first
    argument. The program's name is checked too: a bad setting must never pass
    unnoticed in a process that is not a check (``pytest check/``, say); a
    program it does not recognise gets the traceback, as any other command.
    """
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] != "check":
        return False
    program = Path(argv[0])
    return program.name in {"manage.py", "django-admin", "django-admin.py"} or (
        program.name == "__main__.py" and program.parent.name == "django"
    )
