"""Every ``python`` example in docs/django_tasks.md runs, in order, with the page's own ``TASKS``.

The page's settings are applied (``TASKS`` with ``override_settings``, ``AIRLOCK`` with
``configure_from_settings``); its tasks live in a module of their own, so the
database backend can find them by their path, as a worker would. The outbox
section's files are a project's, checked by tests/test_docs_outbox.py.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip(
    "django.tasks", reason=f"django.tasks needs Django 6, which needs Python 3.12+ (this is {sys.version.split()[0]})"
)

from django.tasks import task_backends
from django.test import override_settings
from django_tasks_db.models import DBTaskResult

import airlock
from airlock.integrations.django import configure_from_settings
from airlock.integrations.django_tasks import AirlockBackend
from tests.djangoproject.checks import require_database

require_database()

PAGE = Path(__file__).resolve().parent.parent / "docs" / "django_tasks.md"
WITHOUT_OUTBOX = re.sub(r"^## Through the outbox\n.*?(?=^## )", "", PAGE.read_text(), flags=re.S | re.M)
BLOCKS = re.findall(r"^```python\n(.*?)^```", WITHOUT_OUTBOX, flags=re.S | re.M)


@pytest.mark.django_db(transaction=True)
def test_django_tasks_page_examples_run(monkeypatch):
    page = types.ModuleType("docs_django_tasks")
    monkeypatch.setitem(sys.modules, page.__name__, page)
    namespace = page.__dict__
    overrides: list[override_settings] = []
    sent = []
    airlock.signals.intent_dispatched.connect(lambda sender, intent, result: sent.append(result), weak=False)
    try:
        for number, block in enumerate(BLOCKS, 1):
            where = f"docs/django_tasks.md, python example {number} ({block.splitlines()[0]!r})"
            exec(compile(block, where, "exec"), namespace)
            tasks_setting = namespace.pop("TASKS", None)
            if tasks_setting is not None:
                for alias, entry in tasks_setting.items():
                    assert isinstance(AirlockBackend(alias, entry), AirlockBackend), where
                overrides.append(override_settings(TASKS=tasks_setting))
                overrides[-1].enable()
            settings = namespace.pop("AIRLOCK", None)
            if settings is not None:
                configure_from_settings(settings)
            if number == 4:
                [result] = sent
                [row] = DBTaskResult.objects.all()
                assert str(row.id) == result.id
                assert (row.task_path, row.priority, row.queue_name) == ("docs_django_tasks.send_receipt", 10, "emails")
        assert len(BLOCKS) >= 6
        assert isinstance(task_backends["default"], AirlockBackend)
        assert namespace["ship"].priority == 5 and namespace["ship"].queue_name == "emails"
    finally:
        for override in reversed(overrides):
            override.disable()
