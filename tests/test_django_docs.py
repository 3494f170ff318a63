"""Every ``python`` example in docs/django.md runs, in order, against the real database.

The page's ``shop`` app is the test project's; ``AIRLOCK`` dicts are checked with
``configure_from_settings``; ``TestCase`` classes are run; the ``Command`` is run dry.
"""

from __future__ import annotations

import io
import re
import sys
import unittest
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import TestCase

import airlock
from airlock.integrations.django import configure_from_settings
from tests.djangoproject import shop
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop import models, tasks

require_database()

PAGE = Path(__file__).resolve().parent.parent / "docs" / "django.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_django_page_examples_run(monkeypatch):
    for name, module in {"shop": shop, "shop.models": models, "shop.tasks": tasks}.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace: dict[str, object] = {"__name__": "docs_django"}
    for number, block in enumerate(BLOCKS, 1):
        where = f"docs/django.md, python example {number} ({block.splitlines()[0]!r})"
        exec(compile(block, where, "exec"), namespace)
        settings = namespace.pop("AIRLOCK", None)
        if settings is not None:
            before = airlock.get_configuration()
            configure_from_settings(settings)  # raises ImproperlyConfigured if the page is wrong
            airlock.reset_configuration()  # keep the page's recording executor, not Celery
            airlock.configure(**{key: value for key, value in before.items() if value})
        for value in list(namespace.values()):
            if isinstance(value, type) and issubclass(value, TestCase) and value.__module__ == "docs_django":
                namespace.pop(value.__name__)
                result = unittest.TestResult()
                unittest.defaultTestLoader.loadTestsFromTestCase(value).run(result)
                assert result.testsRun > 0 and result.wasSuccessful(), (where, result.errors, result.failures)
    assert len(BLOCKS) >= 10
    sent = namespace["sent"]
    sent.clear()
    out = io.StringIO()
    call_command(namespace["Command"](), dry_run=True, stdout=out)
    assert out.getvalue().startswith("airlock dry run: ")
    assert sent == []
