"""Django settings for airlock's own tests.

PostgreSQL by default (two aliases on the same server, so cross-database
behaviour is real); ``AIRLOCK_TEST_DB=sqlite`` runs the same tests on SQLite,
which is what a user without a database server has.
"""

from __future__ import annotations

import os
import socket
import tempfile


def _postgres_reachable() -> bool:
    host, port = os.environ.get("PGHOST", "127.0.0.1"), int(os.environ.get("PGPORT", "5432"))
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# PostgreSQL unless asked otherwise. A developer without a PostgreSQL server gets
# SQLite (pytest's header says so); under CI=true a missing server is not papered
# over: the Django tests then fail to reach it.
_IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ENGINE = os.environ.get("AIRLOCK_TEST_DB") or ("postgres" if _IN_CI or _postgres_reachable() else "sqlite")
# Appended to the test databases' names, so two test runs on one machine (two
# engineers, two CI jobs) never create or drop each other's databases.
SUFFIX = os.environ.get("AIRLOCK_TEST_DB_SUFFIX", "")

SECRET_KEY = "airlock-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.djangoproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if ENGINE == "sqlite":
    # Test databases are files, not Django's default shared in-memory ones: a
    # worker thread then sees what a real second process would (committed rows
    # only), instead of shared-cache table locks.
    DATABASES = {
        alias: {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": f"airlock-test-{alias}.sqlite3",
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"airlock-test-{alias}{SUFFIX}.sqlite3")},
        }
        for alias in ("default", "other")
    }
else:
    _pg = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
    DATABASES = {
        "default": {**_pg, "NAME": "test", "TEST": {"NAME": f"airlock_test_default{SUFFIX}"}},
        "other": {**_pg, "NAME": "test", "TEST": {"NAME": f"airlock_test_other{SUFFIX}"}},
    }

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_q",
    "airlock.integrations.django",
    "tests.djangoproject.shop",
]

MIDDLEWARE = [
    "airlock.integrations.django.AirlockMiddleware",
]

# django-q2 with its ORM broker on the default database.
Q_CLUSTER = {
    "name": "airlock-tests",
    "orm": "default",
    "workers": 1,
    "timeout": 30,
    "retry": 60,
    "catch_up": False,
    "sync": False,
    "poll": 0.1,
}

LOGGING_CONFIG = None

# Django 6's tasks framework (Python 3.12+): the tests of tests/test_django_tasks*.py.
# "db" is django-tasks-db's ORM backend; the airlock_* aliases wrap a real backend
# in AirlockBackend, so plain task.enqueue() calls wait for airlock's scopes.
try:
    import django.tasks  # noqa: F401
except ImportError:
    pass
else:
    INSTALLED_APPS.append("django_tasks_db")
    _DB_TASKS = {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "emails"]}
    TASKS = {
        "default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
        "db": _DB_TASKS,
        "dummy": {"BACKEND": "django.tasks.backends.dummy.DummyBackend", "QUEUES": ["default", "emails"]},
        "plain": {"BACKEND": "tests.django_tasks_support.backends.PlainBackend"},
        "airlock_db": {"BACKEND": "airlock.integrations.django_tasks.AirlockBackend", "OPTIONS": {"WRAPS": _DB_TASKS}},
        "airlock_immediate": {
            "BACKEND": "airlock.integrations.django_tasks.AirlockBackend",
            "OPTIONS": {"WRAPS": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}},
        },
        "airlock_dummy": {
            "BACKEND": "airlock.integrations.django_tasks.AirlockBackend",
            "OPTIONS": {"WRAPS": {"BACKEND": "django.tasks.backends.dummy.DummyBackend", "QUEUES": ["default"]}},
        },
    }
