"""The relay finds tasks the way each queue's worker does, in a fresh interpreter (issue 20).

The subprocess tests start ``python manage.py airlock_relay`` in
``tests/projects/discovery``, a ``startproject``-shaped site: the settings module
picks the layout (``proj``: Celery's canonical one; ``bareproj``: the same
without the ``__init__.py`` line; ``hueyproj``: djhuey; ``dramatiqproj``:
django_dramatiq; ``plaindramatiq``: Dramatiq with ``OUTBOX["IMPORTS"]``). Nothing
in that process imports a task module but the relay's discovery: the views import
their tasks lazily. Rows are written with the SQL the outbox writes (``_store.insert``)
into a SQLite file of the test's own, and delivery is read from a Redis of its own.

The rest drives the same code in this process: the fix each carrier's error names,
and ``OUTBOX["IMPORTS"]`` that does not import.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from airlock.integrations.django.outbox import (
    Relay,
    TaskDiscoveryError,
    TaskNotFound,
    configure_outbox,
    discover_tasks,
)
from airlock.integrations.django.outbox._carriers import HueyCarrier, carrier_named
from tests.own_redis import OwnRedis

PROJECT = Path(__file__).parent / "projects" / "discovery"
COLUMNS = (
    "intent_id, task, executor, payload, state, attempts, created_at, available_at, claimed_by, written_by, last_error"
)


@pytest.fixture(scope="module")
def redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with OwnRedis() as server:
        yield server


def _environment(settings: str, database: Path, redis_url: str, outbox: dict[str, Any] | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE=f"{settings}.settings",
        DISCOVERY_DB=str(database),
        DISCOVERY_REDIS=redis_url,
        DISCOVERY_OUTBOX=json.dumps(outbox or {}),
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ left in the source tree
    )
    return env


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, redis: OwnRedis) -> Path:
    """A migrated database file, copied by each test (one ``migrate`` per module)."""
    path = tmp_path_factory.mktemp("discovery") / "template.sqlite3"
    env = _environment("proj", path, redis.url, None)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return path


@dataclass
class Site:
    """The project under one settings module, with its database file and the test's Redis."""

    settings: str
    database: Path
    redis: OwnRedis

    def write(self, executor: str, task: str, *args: Any, state: str = "ready") -> str:
        """One row, as the outbox writes it; its intent id."""
        intent_id = uuid.uuid4().hex
        now = time.time()
        with sqlite3.connect(self.database) as db:
            db.execute(
                f"INSERT INTO airlock_outbox ({COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?, ?, '', '', '')",
                [intent_id, task, executor, json.dumps([list(args), {}, {}]), state, now, now],
            )
        return intent_id

    def rows(self) -> dict[str, tuple[str, int, str, str]]:
        """intent id -> (state, attempts, claimed_by, last_error)."""
        with sqlite3.connect(self.database) as db:
            found = db.execute("SELECT intent_id, state, attempts, claimed_by, last_error FROM airlock_outbox")
            return {row[0]: tuple(row[1:]) for row in found}  # type: ignore[misc]

    def manage(self, *args: str, outbox: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT,
            env=_environment(self.settings, self.database, self.redis.url, outbox),
            capture_output=True,
            text=True,
            timeout=60,  # a relay spinning on a row it cannot resolve would never end
        )


@pytest.fixture
def site(template: Path, redis: OwnRedis, tmp_path: Path) -> Callable[[str], Site]:
    client = redis.client()
    client.flushdb()  # the test's own Redis: each test reads only what its relay sent
    client.close()

    def make(settings: str) -> Site:
        database = tmp_path / f"{settings}.sqlite3"
        shutil.copyfile(template, database)
        return Site(settings, database, redis)

    return make


def celery_queue(redis: OwnRedis) -> list[str]:
    return redis.queued_ids("celery")[::-1]  # LPUSH: the oldest is last


def huey_queue(redis: OwnRedis) -> list[str]:
    from huey import RedisHuey

    huey = RedisHuey("discovery", url=redis.url)
    return [huey.serializer.deserialize(raw).id for raw in huey.storage.enqueued_items()]


def dramatiq_queue(redis: OwnRedis) -> list[str]:
    client = redis.client()
    try:
        # Keyed by the Redis broker's own id; the message inside carries the intent id.
        return [json.loads(raw)["message_id"] for raw in client.hvals("dramatiq:default.msgs")]
    finally:
        client.close()


# -- in a fresh interpreter, as `manage.py airlock_relay` runs -------------------------------------


@pytest.mark.one_lane
@pytest.mark.parametrize("flags", [[], ["--skip-checks"]], ids=["with-checks", "skip-checks"])
def test_the_relay_finds_celery_tasks_as_the_worker_does(site, flags):
    """autodiscover_tasks(), CELERY_IMPORTS and OUTBOX["IMPORTS"]: each source's task is delivered."""
    shop = site("proj")
    sent = [
        shop.write("celery", "shop.tasks.send_confirmation", 7),  # app.autodiscover_tasks()
        shop.write("celery", "shop.jobs.rebuild_index"),  # CELERY_IMPORTS
        shop.write("celery", "shop.extra.send_newsletter", 12),  # OUTBOX["IMPORTS"] only
    ]
    done = shop.manage("airlock_relay", "--once", *flags, outbox={"IMPORTS": ["shop.extra"]})
    assert done.returncode == 0, done.stderr
    assert "3 sent, 0 failed (0 dead)" in done.stdout
    assert celery_queue(shop.redis) == sent
    assert {state for state, *_ in shop.rows().values()} == {"sent"}


@pytest.mark.one_lane
def test_an_unresolved_name_costs_no_attempt_is_reported_once_and_fails_once(site):
    shop = site("proj")
    gone = [shop.write("celery", "shop.tasks.renamed", n) for n in range(3)]
    kept = shop.write("celery", "shop.tasks.send_confirmation", 1)
    # A batch of one: a relay that did not skip the name would claim its first row forever.
    done = shop.manage("airlock_relay", "--once", "--batch-size", "1")
    assert done.returncode == 1
    assert "1 sent, 0 failed (0 dead)" in done.stdout
    # Logged once, through the project's LOGGING: the Celery fixup's second django.setup() during
    # discovery runs LOGGING again, which must not disable the relay's logger.
    assert done.stderr.count("cannot resolve the celery task 'shop.tasks.renamed'") == 1, done.stderr
    assert "CommandError: this process cannot resolve 1 task name(s)" in done.stderr
    # shop.tasks is imported (autodiscovered) and has no such task: the code differs from the writers'.
    assert "\"shop.tasks\" is imported and registers no 'shop.tasks.renamed'" in done.stderr
    rows = shop.rows()
    assert [rows[intent_id] for intent_id in gone] == [("ready", 0, "", "")] * 3
    assert rows[kept][0] == "sent" and celery_queue(shop.redis) == [kept]


@pytest.mark.one_lane
def test_without_the_app_import_in_the_project_package_the_error_names_that_line(site):
    bare = site("bareproj")
    intent_id = bare.write("celery", "shop.tasks.send_confirmation", 7)
    done = bare.manage("airlock_relay", "--once")
    assert done.returncode == 1
    assert (
        'the Celery app must be imported by your project package: add "from .celery import app as celery_app" '
        "to bareproj/__init__.py" in done.stderr
    )
    assert bare.rows()[intent_id] == ("ready", 0, "", "")


@pytest.mark.one_lane
def test_check_lists_each_name_of_the_undelivered_rows_sends_nothing_and_fails_on_a_miss(site):
    shop = site("proj")
    for _ in range(2):
        shop.write("celery", "shop.tasks.send_confirmation", 1)
    shop.write("celery", "shop.jobs.rebuild_index", state="dead")
    shop.write("celery", "shop.tasks.send_confirmation", 2, state="held")
    shop.write("celery", "shop.nowhere.lost", state="pending")
    shop.write("celery", "shop.extra.send_newsletter", state="sent")  # delivered: not listed
    done = shop.manage("airlock_relay", "--check")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert "  Celery apps (autodiscover_tasks, imports, include): proj" in lines
    assert [line for line in lines if line.startswith("default: ")] == [
        "default: celery shop.jobs.rebuild_index (1 dead): resolves",
        "default: celery shop.nowhere.lost (1 pending): UNRESOLVED: no Celery app in this process has a task "
        "named 'shop.nowhere.lost'; fix: add \"shop.nowhere\" to CELERY_IMPORTS (the app's imports), or to "
        'settings.AIRLOCK["OUTBOX"]["IMPORTS"]',
        "default: celery shop.tasks.send_confirmation (2 ready, 1 held): resolves",
    ]
    assert "cannot resolve 1 task name(s) carried by undelivered rows: celery 'shop.nowhere.lost'" in done.stderr
    assert celery_queue(shop.redis) == []
    assert sorted(state for state, *_ in shop.rows().values()) == ["dead", "held", "pending", "ready", "ready", "sent"]


@pytest.mark.one_lane
def test_check_passes_when_this_process_resolves_every_name(site):
    shop = site("proj")
    shop.write("celery", "shop.tasks.send_confirmation", 1)
    shop.write("celery", "shop.extra.send_newsletter", 2)
    done = shop.manage("airlock_relay", "--check", "--skip-checks", outbox={"IMPORTS": ["shop.extra"]})
    assert done.returncode == 0, done.stderr
    assert "  OUTBOX['IMPORTS']: shop.extra" in done.stdout.splitlines()
    assert "2 task name(s) in undelivered rows, 0 this process cannot resolve" in done.stdout
    assert celery_queue(shop.redis) == []


@pytest.mark.parametrize(
    ("settings", "executor", "task", "queue"),
    [
        ("hueyproj", "huey", "hueyshop.tasks.send_confirmation", huey_queue),
        ("dramatiqproj", "dramatiq", "send_confirmation", dramatiq_queue),
        ("plaindramatiq", "dramatiq", "send_confirmation", dramatiq_queue),
    ],
    ids=["huey-djhuey", "dramatiq-django_dramatiq", "dramatiq-imports"],
)
@pytest.mark.one_lane
def test_the_relay_finds_huey_and_dramatiq_tasks_as_their_workers_do(site, settings, executor, task, queue):
    """djhuey with no OUTBOX["HUEY"]; django_dramatiq's discovery; without it, OUTBOX["IMPORTS"]."""
    shop = site(settings)
    intent_id = shop.write(executor, task, 7)
    done = shop.manage("airlock_relay", "--once", "--skip-checks")
    assert done.returncode == 0, done.stderr
    assert "1 sent, 0 failed (0 dead)" in done.stdout
    assert queue(shop.redis) == [intent_id]
    assert shop.rows()[intent_id][0] == "sent"


# -- in this process -----------------------------------------------------------------------------


def test_a_module_in_imports_that_does_not_import_stops_the_relay_naming_the_setting_and_module():
    configure_outbox({"IMPORTS": ["tests.no_such_module_for_the_relay"]})
    try:
        expected = r"settings\.AIRLOCK\['OUTBOX'\]\['IMPORTS'\] lists 'tests\.no_such_module_for_the_relay', which"
        with pytest.raises(TaskDiscoveryError, match=expected):
            Relay(databases=["default"]).run_once()
        with pytest.raises(CommandError, match=expected):
            call_command("airlock_relay", "--once")
        with pytest.raises(CommandError, match=expected):
            call_command("airlock_relay", "--check")
    finally:
        configure_outbox(None)


def test_imports_are_imported_once_and_reported():
    configure_outbox({"IMPORTS": ["tests.celery_support"]})
    try:
        assert "tests.celery_support" in discover_tasks().imports
        assert discover_tasks().imports.count("tests.celery_support") == 1
    finally:
        configure_outbox(None)


@pytest.mark.parametrize(
    ("executor", "name", "fix"),
    [
        ("django_q", "shop.tasks.send", 'add "shop.tasks.send" to settings.AIRLOCK["OUTBOX"]["TASKS"]'),
        (
            "celery",
            "nowhere.tasks.send",
            'add "nowhere.tasks" to CELERY_IMPORTS (the app\'s imports), or to settings.AIRLOCK["OUTBOX"]["IMPORTS"]',
        ),
        (
            "dramatiq",
            "nobody_declares_this",
            'add "django_dramatiq" to INSTALLED_APPS (it finds task modules as rundramatiq does), or add the '
            'module that defines \'nobody_declares_this\' to settings.AIRLOCK["OUTBOX"]["IMPORTS"] (the '
            "modules you pass to the dramatiq CLI)",
        ),
        (
            "nope",
            "x",
            "register it in the relay's process too: call register_carrier() in a module listed in "
            'settings.AIRLOCK["OUTBOX"]["IMPORTS"]',
        ),
    ],
    ids=["django_q", "celery", "dramatiq", "unknown-carrier"],
)
def test_each_resolve_failure_names_the_line_to_add(executor, name, fix):
    import tests.outbox_support  # noqa: F401  # a Celery app exists in this process

    with pytest.raises(TaskNotFound) as raised:
        carrier_named(executor).resolve(name)
    assert raised.value.fix == fix
    assert str(raised.value).endswith(f"; {fix}")


def test_huey_without_djhuey_or_a_listed_instance_names_both_fixes():
    with pytest.raises(TaskNotFound) as raised:
        HueyCarrier().resolve("shop.tasks.send")
    assert raised.value.fix == (
        'add "huey.contrib.djhuey" to INSTALLED_APPS or list your Huey instance in settings.AIRLOCK["OUTBOX"]["HUEY"]'
    )
