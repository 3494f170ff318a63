"""A bad ``settings.AIRLOCK`` under ``manage.py check``: system-check errors, not a traceback.

Every other way of starting Django (the relay, the web process) still refuses to
start, with the same message. Each case runs ``tests/projects/checks`` as real
processes, its ``AIRLOCK`` given as JSON in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airlock.integrations.django.apps import is_check_command

PROJECT = Path(__file__).resolve().parent / "projects" / "checks"
LOAD_WSGI = "from django.core.wsgi import get_wsgi_application; get_wsgi_application()"


def run(tmp_path: Path, airlock: Any, *command: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings",
        "CHECKS_AIRLOCK": json.dumps(airlock),
        "CHECKS_DATABASE": str(tmp_path / "db.sqlite3"),
        "PYTHONPATH": str(PROJECT),
    }
    return subprocess.run(
        [sys.executable, *command], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


CASES = [
    ({"OUTBX": True}, "airlock.E003", "settings.AIRLOCK has unknown key(s) 'OUTBX' (did you mean 'OUTBOX'?)"),
    (
        {"EXECUTOR": "shop.nowhere.send"},
        "airlock.E003",
        "settings.AIRLOCK['EXECUTOR'] = 'shop.nowhere.send' does not import",
    ),
    ({"POLICY": "airlock.Scope"}, "airlock.E003", "settings.AIRLOCK['POLICY'] must be a policy"),
    (
        {"OUTBOX": {"FAST_PTH": "inline"}},
        "airlock.E004",
        "settings.AIRLOCK['OUTBOX'] has unknown option(s) 'FAST_PTH' (did you mean 'FAST_PATH'?)",
    ),
    (
        {"OUTBOX": {"TASKS": ["shop.nowhere.send"]}},
        "airlock.E004",
        "settings.AIRLOCK['OUTBOX']['TASKS'] lists 'shop.nowhere.send', which does not import",
    ),
]


@pytest.mark.parametrize(
    ("airlock", "code", "message"),
    CASES,
    ids=[
        "unknown-key",
        "executor-does-not-import",
        "wrong-policy",
        "unknown-outbox-option",
        "outbox-task-does-not-import",
    ],
)
@pytest.mark.one_lane
def test_manage_py_check_reports_a_bad_setting_as_an_error_and_everything_else_refuses_to_start(
    tmp_path: Path, airlock: Any, code: str, message: str
) -> None:
    checked = run(tmp_path, airlock, "manage.py", "check")
    output = checked.stdout + checked.stderr
    assert checked.returncode == 1, output
    assert f"({code}) {message}" in output
    assert "HINT: Fix settings.AIRLOCK" in output
    assert "Traceback" not in output

    web = run(tmp_path, airlock, "-c", LOAD_WSGI)
    assert web.returncode != 0 and message in web.stderr, web.stderr
    relay = run(tmp_path, airlock, "manage.py", "airlock_relay", "--once")
    assert relay.returncode != 0 and message in relay.stderr, relay.stderr


@pytest.mark.one_lane
def test_manage_py_check_passes_a_good_setting(tmp_path: Path) -> None:
    checked = run(tmp_path, {"OUTBOX": {"FAST_PATH": "inline"}}, "manage.py", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "check"], True),
        (["/srv/shop/manage.py", "check", "--deploy"], True),
        (["/venv/bin/django-admin", "check"], True),
        (["/venv/lib/python3.12/site-packages/django/__main__.py", "check"], True),
        (["manage.py", "airlock_relay", "--check"], False),
        (["manage.py", "runserver"], False),
        (["/venv/bin/pytest", "check"], False),
        (["manage.py"], False),
    ],
    ids=["manage", "path-and-options", "django-admin", "python-m-django", "relay-check", "runserver", "pytest", "bare"],
)
def test_only_a_check_command_defers_a_settings_error(argv: list[str], expected: bool) -> None:
    assert is_check_command(argv) is expected
