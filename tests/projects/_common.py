"""The deployment-shaped projects of ``tests/projects/``, and what their tests share.

Each project is a folder laid out as ``django-admin startproject proj .`` and
``python manage.py startapp shop`` leave it, with the settings the docs give
for its queue. ``tests/test_projects.py`` starts each one as real processes,
with the commands the docs give, each in a fresh interpreter whose working
directory is the project's folder and whose ``PYTHONPATH`` holds nothing of this
repository (airlock is installed; the project is the current directory): gunicorn,
the queue's own worker, and ``python manage.py airlock_relay``. It then breaks
them (the broker stopped, a web worker killed after its commit, the relay killed
mid-batch) and counts every task on the real worker.

What every project keeps, so that one test body serves them all:

- **Environment.** Its settings read ``SHOP_DATABASE`` (the PostgreSQL database,
  on ``PGHOST``/``PGPORT``/``PGUSER``), ``SHOP_REDIS`` (the URL of the Redis the
  test started for it, where it has a broker) and ``SHOP_OUTBOX`` (JSON: the
  ``AIRLOCK["OUTBOX"]`` value a scenario needs, a short ``LEASE`` say; unset or
  empty, the project's documented value).
- **URLs.** ``/ping/`` answers 200. ``/order/?token=T`` commits an ``Order`` with
  that token and enqueues each of the project's ``tasks`` for it (the order's id
  as the task's only argument), the task modules imported lazily (inside the view,
  or in the model's ``save()``): nothing but the queue's (and the relay's) own
  discovery imports them. ``&crash=after-commit`` makes the web worker SIGKILL
  itself after its COMMIT, before its scope decides. ``/order/rolled-back/?token=T``
  enqueues the same, then rolls back (a 200 or a 500, as the project chooses).
- **Tables.** ``shop_order(id, token)``; ``shop_delivery(order_id, task, first,
  pid, ran_at)``, one row per run of a task on the real worker (``first``: it was the
  first delivery of its intent id; ``ran_at``: seconds since the epoch, for the
  recovery times).

To add a project, put its folder here and a :class:`Project` in :data:`PROJECTS`
(add, never rename: two helpers share this file).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, require_service
from tests.faults import OwnRedis, free_port
from tests.servers.harness import WAIT, Processes, Server, database, psql

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the environment's scripts: gunicorn, celery, ...

__all__ = [
    "PROJECTS",
    "Project",
    "Stack",
    "percentile",
    "require",
    "started",
]


@dataclass(frozen=True)
class Project:
    """One project under ``tests/projects/`` and how its queue's worker starts."""

    name: str  # its folder
    worker: tuple[str, ...]  # the worker's command, as the docs give it ("python": this interpreter)
    ready: str  # lower-case text the worker logs once it consumes
    modules: tuple[str, ...]  # what must be importable to run it
    tasks: tuple[str, ...] = ("send_confirmation", "reserve_stock")  # enqueued per order
    broker: str = "redis"  # "redis": a Redis of the test's own, in SHOP_REDIS; "": none
    soak: bool = False  # the soak runs on it too

    @property
    def folder(self) -> Path:
        return HERE / self.name


CELERY = Project(
    name="celery_shop",
    # docs/celery.md; the solo pool runs one task at a time, in order.
    worker=("celery", "-A", "proj", "worker", "-l", "info", "-P", "solo"),
    ready=" ready.",
    modules=("celery", "redis", "gunicorn", "psycopg"),
    soak=True,
)

HUEY = Project(
    name="huey_shop",
    worker=("python", "manage.py", "run_huey"),  # the consumer's workers: settings.HUEY["consumer"]
    ready="consumer started",
    modules=("huey", "redis", "gunicorn", "psycopg"),
)

DRAMATIQ = Project(
    name="dramatiq_shop",
    # docs/dramatiq.md, with django_dramatiq: it builds the broker from DRAMATIQ_BROKER,
    # and rundramatiq hands every app's tasks module to the dramatiq CLI.
    worker=("python", "manage.py", "rundramatiq", "--processes", "1", "--threads", "2"),
    ready="is ready for action",
    modules=("dramatiq", "django_dramatiq", "redis", "gunicorn", "psycopg"),
)

DRAMATIQ_PLAIN = Project(
    name="dramatiq_plain_shop",
    # docs/dramatiq.md, without django_dramatiq: proj/dramatiq.py sets the broker, the
    # worker is the dramatiq CLI, and the relay imports the same modules (OUTBOX["IMPORTS"]).
    worker=("dramatiq", "proj.worker", "shop.tasks", "--processes", "1", "--threads", "2"),
    ready="is ready for action",
    modules=("dramatiq", "redis", "gunicorn", "psycopg"),
)

DJANGO_Q = Project(
    name="djangoq_shop",
    # docs/django_q.md; Q_CLUSTER on the test's Redis (a broker that can be stopped),
    # OUTBOX["TASKS"] naming each task by its path.
    worker=("python", "manage.py", "qcluster"),
    ready="running.",
    modules=("django_q", "redis", "gunicorn", "psycopg"),
)

DJANGO_TASKS = Project(
    name="tasks_shop",
    # docs/django_tasks.md: Django 6's django.tasks on django-tasks-db, whose "broker" is
    # the project's own database (so no Redis), and its worker command.
    worker=("python", "manage.py", "db_worker"),
    ready="starting worker",
    modules=("django_tasks_db", "gunicorn", "psycopg"),
    broker="",
)


def _django_version() -> tuple[int, ...]:
    import django

    return tuple(django.VERSION[:2])


_DJANGO = _django_version()
_NEEDS_DJANGO_6 = "needs Django 6 (Python 3.12+)"

# The parametrization of tests/test_projects.py: one started stack per entry.
# --- projects: add yours below ---
PROJECTS = [
    pytest.param(CELERY, id="celery"),
    pytest.param(HUEY, id="huey"),
    pytest.param(DRAMATIQ, id="dramatiq"),
    pytest.param(DRAMATIQ_PLAIN, id="dramatiq_plain"),
    pytest.param(DJANGO_Q, id="django_q"),
    pytest.param(DJANGO_TASKS, id="django_tasks", marks=pytest.mark.skipif(_DJANGO < (6,), reason=_NEEDS_DJANGO_6)),
]
# --- end of projects ---


def require(project: Project) -> None:
    """Skip (or, under CI=true, fail) when what the project needs is missing here."""
    require_service("postgres")
    missing = [name for name in project.modules if importlib.util.find_spec(name) is None]
    if project.broker == "redis" and shutil.which("redis-server") is None:
        missing.append("redis-server (the binary)")
    if missing:
        reason = f"{project.name} needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def command(words: Sequence[str]) -> list[str]:
    """``words`` with its program found: ``python`` is this interpreter, others scripts beside it."""
    first, *rest = words
    if first == "python":
        return [sys.executable, *rest]
    found = shutil.which(first, path=str(BIN)) or shutil.which(first)
    if found is None:
        raise AssertionError(f"{first} is not installed in {BIN}")
    return [found, *rest]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


class Stack:
    """One project's database, broker and processes, and what the tests ask of them."""

    def __init__(self, project: Project, db: str, broker: OwnRedis | None, processes: Processes) -> None:
        self.project = project
        self.db = db
        self.broker = broker
        self.processes = processes
        self.web: Server | None = None
        self.worker: Server | None = None
        self.relay: Server | None = None

    # -- processes -----------------------------------------------------------------------

    def env(self, outbox: dict[str, Any] | None = None) -> dict[str, str]:
        """The environment of one of the project's processes (``outbox``: ``SHOP_OUTBOX``)."""
        return project_env(self.db, self.broker.url if self.broker else "", outbox)

    def start(self, name: str, words: Sequence[str], *, outbox: dict[str, Any] | None = None, port: int | None = None):
        """Start ``words`` in the project's folder, in a fresh interpreter."""
        return self.processes.start(name, command(words), self.env(outbox), port, cwd=self.project.folder)

    def start_web(self, workers: int = 2, outbox: dict[str, Any] | None = None) -> Server:
        """``gunicorn proj.wsgi -w 2 -b 127.0.0.1:PORT``, answering."""
        port = free_port()
        words = ["gunicorn", "proj.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
        server = self.start("gunicorn", words, outbox=outbox, port=port)
        server.wait_ready("/ping/")
        return server

    def start_worker(self) -> Server:
        """The queue's own worker, consuming."""
        server = self.start(f"{self.project.name}-worker", self.project.worker)
        return Processes._wait_for_line(server, self.project.ready, f"{self.project.name}'s worker")

    def start_relay(self, *arguments: str, outbox: dict[str, Any] | None = None) -> Server:
        """``python manage.py airlock_relay``."""
        return self.start("relay", ["python", "manage.py", "airlock_relay", *arguments], outbox=outbox)

    def manage(self, *arguments: str, outbox: dict[str, Any] | None = None, timeout: float = 120):
        """``python manage.py ARGUMENTS`` to its end."""
        return subprocess.run(
            command(["python", "manage.py", *arguments]), cwd=self.project.folder, env=self.env(outbox),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def stop(self, server: Server | None) -> None:
        """SIGTERM, as its operator stops it, and wait for its exit."""
        if server is not None and server.process.poll() is None:
            server.signal(signal.SIGTERM)
            server.wait()

    def heal(self) -> None:
        """The broker up and answering, and the web, the worker and the default relay running."""
        if self.broker is not None:
            if self.broker._is_frozen:
                self.broker.thaw()
            if self.broker.pid is None:
                self.broker.start()
        if self.web is None or self.web.process.poll() is not None:
            self.web = self.start_web()
        else:
            self.web.wait_ready("/ping/")  # gunicorn replaces a killed worker
        if self.worker is None or self.worker.process.poll() is not None:
            self.worker = self.start_worker()
        if self.relay is None or self.relay.process.poll() is not None:
            self.relay = self.start_relay()

    def logs(self) -> str:
        """The tails of the logs of the stack's processes, for a failure's message."""
        parts = []
        for server in (self.relay, self.worker, self.web):
            if server is not None:
                parts.append(f"--- {server.name} (exit {server.process.poll()}):\n{server.log()[-2500:]}")
        return "\n".join(parts)

    # -- requests ------------------------------------------------------------------------

    def order(self, token: str, *, server: Server | None = None, crash: bool = False) -> float:
        """One order through ``/order/``; the time its response (or, with ``crash``, the drop) came."""
        url = f"{(server or self.web).url}/order/?token={token}"  # type: ignore[union-attr]
        if crash:
            url += "&crash=after-commit"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
        except (ConnectionError, urllib.error.URLError, OSError) as error:
            if not crash:
                raise AssertionError(f"{url}: {error}\n{self.logs()}") from error
            return time.time()
        if crash:
            raise AssertionError(f"{url} answered: the web worker was to kill itself after its commit")
        return time.time()

    def orders(self, token: str, count: int, *, server: Server | None = None, concurrency: int = 2) -> None:
        """``count`` orders under ``token``, ``concurrency`` at a time; every one must answer 200."""
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: self.order(token, server=server), range(count)))

    def rolled_back(self, token: str, *, server: Server | None = None) -> int:
        """One order through ``/order/rolled-back/``; its status (200 or 500)."""
        url = f"{(server or self.web).url}/order/rolled-back/?token={token}"  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    # -- what the database says ------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return psql(self.db, sql, params)

    def committed(self, token: str | None = None) -> list[int]:
        """Ids of the orders committed (under ``token``)."""
        if token is None:
            return [row[0] for row in self.query("SELECT id FROM shop_order")]
        return [row[0] for row in self.query("SELECT id FROM shop_order WHERE token = %s", [token])]

    def expected(self, order_ids: Iterable[int]) -> set[tuple[int, str]]:
        return {(order_id, task) for order_id in order_ids for task in self.project.tasks}

    def deliveries(self, order_ids: Iterable[int] | None = None) -> collections.Counter[tuple[int, str]]:
        """(order id, task) -> how many times the worker ran it (duplicates included)."""
        rows = self.query("SELECT order_id, task, count(*) FROM shop_delivery GROUP BY order_id, task")
        wanted = None if order_ids is None else set(order_ids)
        return collections.Counter(
            {(order_id, task): n for order_id, task, n in rows if wanted is None or order_id in wanted}
        )

    def ran_at(self, order_ids: Iterable[int]) -> dict[int, float]:
        """Order id -> when the last of its tasks first ran (``shop_delivery.ran_at``)."""
        rows = self.query(
            "SELECT order_id, task, min(ran_at) FROM shop_delivery WHERE order_id = ANY(%s) GROUP BY order_id, task",
            [list(order_ids)],
        )
        last: dict[int, float] = {}
        for order_id, _, when in rows:
            last[order_id] = max(last.get(order_id, 0.0), when)
        return last

    def outbox(self) -> list[tuple[int | None, str, str, int, str]]:
        """Every outbox row: (its order id, task, state, attempts, last error)."""
        rows = self.query("SELECT payload, task, state, attempts, last_error FROM airlock_outbox")
        found = []
        for payload, task, state, attempts, error in rows:
            args = json.loads(payload)[0]
            found.append((args[0] if args else None, task, state, attempts, error))
        return found

    def states(self) -> collections.Counter[str]:
        return collections.Counter(row[2] for row in self.outbox())

    def describe(self) -> str:
        """The outbox's states and a few errors, and the processes' logs."""
        rows = self.outbox()
        errors = collections.Counter(row[4][:300] for row in rows if row[4])
        return (
            f"outbox states {dict(collections.Counter(row[2] for row in rows))}, attempts "
            f"{dict(collections.Counter(row[3] for row in rows))}, errors {dict(errors.most_common(3))}; "
            f"the broker holds {self.broker_keys()}\n{self.logs()}"
        )

    def intent_ids(self, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], str]:
        """(order id, task) -> the intent id of its outbox row (the task's id on the broker)."""
        wanted = set(keys)
        found = {}
        for intent_id, task, payload in self.query("SELECT intent_id, task, payload FROM airlock_outbox"):
            args = json.loads(payload)[0]
            key = (args[0] if args else None, task.rsplit(".", 1)[-1])
            if key in wanted:
                found[key] = intent_id
        return found

    def broker_took(self, intent_ids: Iterable[str]) -> set[str]:
        """Those of ``intent_ids`` whose message the broker wrote to its append-only file.

        The test's Redis logs every write it acknowledged (``appendfsync always``):
        a message pushed onto a queue is there, with its id, even after a worker
        popped it, or a kill lost it on its way to the worker.
        """
        if self.broker is None:
            return set()
        written = b"".join(path.read_bytes() for path in sorted(self.broker._dir.glob("appendonlydir/*.aof")))
        return {intent_id for intent_id in intent_ids if intent_id.encode() in written}

    def broker_holds(self, intent_ids: Iterable[str]) -> set[str]:
        """Those of ``intent_ids`` whose message waits in the broker now (in any list or hash)."""
        if self.broker is None or self.broker.pid is None:
            return set()
        import redis

        client = redis.Redis.from_url(self.broker.url, socket_timeout=2)
        try:
            held = []
            for key in client.scan_iter(count=100):
                kind = client.type(key)
                if kind == b"list":
                    held += client.lrange(key, 0, -1)
                elif kind == b"hash":
                    held += client.hvals(key)
        finally:
            client.close()
        waiting = b"\n".join(held)
        return {intent_id for intent_id in intent_ids if intent_id.encode() in waiting}

    def broker_keys(self) -> dict[str, int]:
        """The sizes of the keys in the test's Redis (queues, unacknowledged messages), where it answers."""
        if self.broker is None or self.broker.pid is None:
            return {}
        import redis

        client = redis.Redis.from_url(self.broker.url, socket_timeout=2)
        sizes = {}
        try:
            for key in client.scan_iter(count=100):
                kind = client.type(key).decode()
                length = {"list": client.llen, "hash": client.hlen, "zset": client.zcard, "set": client.scard}.get(kind)
                sizes[key.decode(errors="replace")] = length(key) if length else 1
        except redis.RedisError as error:
            sizes[f"unreadable: {error}"] = 0
        finally:
            client.close()
        return sizes

    def wait_delivered(self, order_ids: Iterable[int], timeout: float = WAIT) -> collections.Counter[tuple[int, str]]:
        """Wait until every task of every order ran at least once; the delivery counts."""
        expected = self.expected(order_ids)
        deadline = time.monotonic() + timeout
        while True:
            ran = self.deliveries({order_id for order_id, _ in expected})
            missing = expected - set(ran)
            if not missing:
                return ran
            if time.monotonic() > deadline:
                orders = {order_id for order_id, _ in missing}
                rows = [
                    (intent_id, task, state)
                    for intent_id, task, state, payload in self.query(
                        "SELECT intent_id, task, state, payload FROM airlock_outbox"
                    )
                    if (json.loads(payload)[0] or [None])[0] in orders
                ]
                raise AssertionError(
                    f"{len(missing)} of {len(expected)} committed task(s) never ran in {timeout:.0f}s "
                    f"(e.g. {sorted(missing)[:4]}; their outbox rows {rows[:6]}): {self.describe()}"
                )
            time.sleep(0.1)

    def wait_sent(self, timeout: float = WAIT) -> None:
        """Wait until no outbox row is left to deliver (every one ``sent``)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if set(states) <= {"sent"}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"rows left undelivered after {timeout:.0f}s: {self.describe()}")
            time.sleep(0.1)

    def barrier(self) -> None:
        """Wait until the worker ran what the broker held before now.

        An order placed now is queued behind every message already on the broker;
        once its tasks ran, a duplicate sent before it has been counted too.
        """
        token = new_token("barrier")
        self.order(token)
        self.wait_delivered(self.committed(token))

    def rollbacks_arrived(self) -> list[tuple[Any, ...]]:
        """Deliveries, and outbox rows, of orders that never committed: must be none."""
        leaked = self.query(
            "SELECT d.order_id, d.task FROM shop_delivery d LEFT JOIN shop_order o ON o.id = d.order_id "
            "WHERE o.id IS NULL"
        )
        known = set(self.committed())
        rows = [
            ("row", order_id, task, state) for order_id, task, state, _, _ in self.outbox() if order_id not in known
        ]
        return [("delivery", *row) for row in leaked] + rows


def new_token(kind: str = "t") -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def project_env(db: str, broker: str, outbox: dict[str, Any] | None = None) -> dict[str, str]:
    """A process's environment: this one's, less what would point it at this repository's tests."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "SHOP_OUTBOX") and not key.startswith("PYTEST_")
    }
    env.update(
        SHOP_DATABASE=db,
        SHOP_REDIS=broker,
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
    )
    if outbox is not None:
        env["SHOP_OUTBOX"] = json.dumps(outbox)
    return env


def _migrate(project: Project, broker: str) -> Any:
    def migrate(name: str) -> None:
        done = subprocess.run(
            command(["python", "manage.py", "migrate", "--verbosity", "0"]), cwd=project.folder,
            env=project_env(name, broker), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode:
            raise AssertionError(f"{project.name}: manage.py migrate failed:\n{done.stderr[-3000:]}")

    return migrate


@contextlib.contextmanager
def started(project: Project, log_dir: Path, *, relay: bool = True) -> Iterator[Stack]:
    """The project's stack: its broker, a migrated database, gunicorn, its worker and a relay."""
    with contextlib.ExitStack() as exits:
        broker = exits.enter_context(OwnRedis(appendonly=True)) if project.broker == "redis" else None
        db = exits.enter_context(database("airlock_projects", _migrate(project, broker.url if broker else "")))
        stack = Stack(project, db, broker, exits.enter_context(Processes(log_dir)))
        # Started side by side: each boots Django in its own interpreter.
        threads = [
            threading.Thread(target=lambda: setattr(stack, "web", stack.start_web())),
            threading.Thread(target=lambda: setattr(stack, "worker", stack.start_worker())),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if stack.web is None or stack.worker is None:
            raise AssertionError(f"{project.name} did not start:\n{stack.logs()}")
        if relay:
            stack.relay = stack.start_relay()
        yield stack
