"""Each queue page's outbox section: its settings pass the outbox's own checks, its commands are the relay's.

A section is the part of a page under a ``##`` heading that names the outbox. Its
``python`` blocks are the files of a project, each opening with a comment naming the
file. A settings file is executed and its ``AIRLOCK`` applied with
``configure_from_settings``; the task paths it lists must be functions that the
page's own ``shop/tasks.py`` defines (stand-ins for them are registered for the
test, so the options import exactly those). The other files are compiled, and
tests/projects/ runs projects laid out this way as real processes. Every
``manage.py airlock_relay`` line of the section's ``bash`` blocks must parse with
the command's own parser.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
import types
from pathlib import Path

import pytest

from airlock.integrations.django import configure_from_settings
from airlock.integrations.django.management.commands.airlock_relay import Command as RelayCommand
from airlock.integrations.django.outbox import OutboxScope, _options

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["celery.md", "huey.md", "dramatiq.md", "django_q.md", "django_tasks.md"]


def outbox_section(text: str) -> str:
    found = re.search(r"^## [^\n]*outbox[^\n]*\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M | re.I)
    assert found is not None, "no '## ... outbox' section"
    return found.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def files(text: str) -> dict[str, list[str]]:
    """The page's ``python`` blocks that open with a file name (``# shop/tasks.py``), by that name."""
    named: dict[str, list[str]] = {}
    for block in blocks(text, "python"):
        first = block.splitlines()[0]
        if re.fullmatch(r"# [\w/]+\.py", first):
            named.setdefault(first[2:], []).append(block)
    return named


def page_tasks_module(text: str) -> types.ModuleType:
    """``shop.tasks`` as the page writes it: one stand-in per function its ``shop/tasks.py`` defines."""
    module = types.ModuleType("shop.tasks")
    for block in files(text).get("shop/tasks.py", []):
        for node in ast.parse(block).body:
            if isinstance(node, ast.FunctionDef):
                setattr(module, node.name, lambda *args, **kwargs: None)
    return module


@pytest.mark.parametrize("page", PAGES)
def test_the_outbox_sections_settings_are_accepted(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / page).read_text()
    section = outbox_section(text)
    settings_blocks = [b for name, found in files(section).items() if name.endswith("settings.py") for b in found]
    assert settings_blocks, f"{page}: the outbox section shows no settings.py"
    if page == "django_tasks.md":
        pytest.importorskip("django.tasks", reason="django.tasks needs Django 6")
    monkeypatch.setitem(sys.modules, "shop", types.ModuleType("shop"))
    monkeypatch.setitem(sys.modules, "shop.tasks", page_tasks_module(text))
    monkeypatch.setattr(_options, "_current", _options._current)  # the options in force come back after
    for block in settings_blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, f"docs/{page}, {block.splitlines()[0]}", "exec"), namespace)
        assert "airlock.integrations.django" in namespace["INSTALLED_APPS"]  # type: ignore[operator]
        chosen = configure_from_settings(namespace["AIRLOCK"])  # raises ImproperlyConfigured if the page is wrong
        assert chosen["scope_cls"] is OutboxScope


@pytest.mark.parametrize("page", PAGES)
def test_the_outbox_sections_files_parse(page: str) -> None:
    section = outbox_section((DOCS / page).read_text())
    named = files(section)
    assert named, f"{page}: the outbox section shows no file"
    for name, found in named.items():
        for block in found:
            compile(block, f"docs/{page}, {name}", "exec")


@pytest.mark.parametrize("page", PAGES)
def test_the_outbox_sections_commands_are_the_relays(page: str) -> None:
    """Each section migrates, starts a worker, runs the relay and its ``--check``, with flags the relay takes."""
    section = outbox_section((DOCS / page).read_text())
    lines = [line.split("#")[0].strip() for block in blocks(section, "bash") for line in block.splitlines()]
    relay_lines = [line for line in lines if "manage.py airlock_relay" in line]
    parser = RelayCommand().create_parser("manage.py", "airlock_relay")
    for line in relay_lines:
        parser.parse_args(shlex.split(line.split("manage.py airlock_relay", 1)[1]))  # CommandError if unknown
    assert "python manage.py migrate" in lines
    assert {"python manage.py airlock_relay", "python manage.py airlock_relay --check"} <= set(relay_lines)
    assert len(lines) > len(relay_lines) + 1, f"{page}: no worker command"
    prose = " ".join(section.split())
    assert "costs its rows no attempt" in prose and "`--once` exits non-zero" in prose, f"{page}: unresolved tasks"
