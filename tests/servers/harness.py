"""Starting, driving and stopping the served project's processes, for the tests and ``bench/``.

Each run has a PostgreSQL database of its own (created, migrated, then dropped
with ``FORCE``) and a Redis it names; every process is started in a session of
its own and killed by its process group in :meth:`Processes.close`, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from tests.faults import free_port
from tests.servers.keys import delivered_key, ran_key

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # seconds: only reached when something is wrong

__all__ = [
    "ROOT",
    "Processes",
    "Server",
    "database",
    "environment",
    "get",
    "new_token",
    "outbox_rows",
    "psql",
    "wait_until_due",
]


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def _admin_dsn(name: str = "postgres") -> str:
    return "host={} port={} user={} dbname={}".format(
        os.environ.get("PGHOST", "127.0.0.1"), os.environ.get("PGPORT", "5432"), os.environ.get("PGUSER", "postgres"),
        name,
    )  # fmt: skip


def psql(name: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on database ``name``, read with a connection of its own."""
    import psycopg

    with psycopg.connect(_admin_dsn(name), autocommit=True) as connection:
        cursor = connection.execute(query, params)
        return list(cursor.fetchall()) if cursor.description else []


@contextlib.contextmanager
def database(prefix: str = "airlock_servers", migrate: Callable[[str], None] | None = None) -> Iterator[str]:
    """A migrated PostgreSQL database of this run's own; dropped (connections and all) afterwards.

    ``migrate(name)`` migrates it (default: the served project's ``migrate``); the
    projects of ``tests/projects/`` run their own ``manage.py migrate``.
    """
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    psql("postgres", f"CREATE DATABASE {name}")
    try:
        if migrate is not None:
            migrate(name)
        else:
            env = environment(name, "redis://127.0.0.1:1/0", "unused", "plain")
            subprocess.run(
                [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
                cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        yield name
    finally:
        psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def environment(db: str, broker: str, queue: str, mode: str, **extra: str) -> dict[str, str]:
    """The environment of one of the project's processes."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.servers.settings",
        AIRLOCK_SERVERS_DB=db,
        AIRLOCK_SERVERS_BROKER=broker,
        AIRLOCK_SERVERS_QUEUE=queue,
        AIRLOCK_SERVERS_MODE=mode,
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def outbox_rows(db: str, token: str) -> dict[str, str]:
    """intent id -> state of every outbox row whose task carries ``token``."""
    rows = psql(db, "SELECT intent_id, state FROM airlock_outbox WHERE payload LIKE %s", [f'[["{token}",%'])
    return dict(rows)  # type: ignore[arg-type]


def wait_until_due(db: str, token: str | None = None) -> float:
    """Sleep until every ready row (of ``token``) is due for the relay; the seconds slept.

    A fast path writes its rows due ``FAST_PATH_DEADLINE`` ahead, so that a relay
    leaves them to their writer meanwhile; a writer that died leaves them to the
    relay only after that grace.
    """
    query = "SELECT max(available_at) FROM airlock_outbox WHERE state = 'ready'"
    params: list[Any] = []
    if token is not None:
        query += " AND payload LIKE %s"
        params.append(f'[["{token}",%')
    latest = psql(db, query, params)[0][0]
    wait = 0.0 if latest is None else max(0.0, latest - time.time() + 0.05)
    time.sleep(wait)
    return wait


class Server:
    """One started process (a server, a worker, a command), with its log in a file."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log_dir: Path, port: int | None, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "w+b")
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str = "/ping/") -> None:
        deadline = time.monotonic() + WAIT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                get(self.url + path, timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} did not answer in {WAIT}s:\n{self.log()[-4000:]}") from None
                time.sleep(0.1)

    def signal(self, number: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, number)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for the process to exit (after a signal); its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit in {timeout}s:\n{self.log()[-4000:]}") from None

    def children(self) -> list[int]:
        """Pids of the process's direct children (gunicorn's workers, say)."""
        found = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in found.read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and every process it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._log.close()


class Processes:
    """Every process one test started, killed on the way out."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Server] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self, name: str, command: list[str], env: dict[str, str], port: int | None = None, cwd: Path = ROOT
    ) -> Server:
        server = Server(name, command, env, self.log_dir, port, cwd)
        self.started.append(server)
        return server

    def serve(self, kind: str, env: dict[str, str], *, workers: int = 2, preload: bool = False) -> Server:
        """Start one of the servers the tests cover, on a free port, and wait until it answers."""
        port = free_port()
        python = sys.executable
        if kind.startswith("gunicorn-"):
            worker_class = kind.removeprefix("gunicorn-")
            command = [
                python, "-m", "gunicorn", "tests.servers.wsgi:application", "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--worker-class", worker_class, "--graceful-timeout", "20",
                "--timeout", "60",
            ]  # fmt: skip
            if worker_class == "gthread":
                command += ["--threads", "4"]
            if preload:
                command.append("--preload")
        elif kind == "uvicorn":
            command = [
                python, "-m", "uvicorn", "tests.servers.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--timeout-graceful-shutdown", "20",
            ]  # fmt: skip
        elif kind == "runserver":
            command = [python, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"]
        else:
            raise ValueError(f"unknown server {kind!r}")
        server = self.start(kind, command, env, port)
        server.wait_ready()
        return server

    def worker(self, env: dict[str, str], queue: str, *, pool: str = "solo", concurrency: int = 1) -> Server:
        command = [
            sys.executable, "-m", "celery", "-A", "tests.servers.worker", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--queues", queue, "--without-heartbeat", "--without-gossip",
            "--without-mingle", "--loglevel", "INFO",
        ]  # fmt: skip
        return self._wait_for_line(self.start(f"celery-{pool}", command, env), " ready.", "the Celery worker")

    def dramatiq_worker(self, env: dict[str, str]) -> Server:
        """``dramatiq tests.servers.dramatiq_app``: one worker process, two threads."""
        command = [sys.executable, "-m", "dramatiq", "tests.servers.dramatiq_app", "--processes", "1", "--threads", "2"]
        return self._wait_for_line(self.start("dramatiq", command, env), "is ready for action", "the Dramatiq worker")

    def huey_consumer(self, env: dict[str, str]) -> Server:
        """``huey_consumer tests.servers.huey_app.huey``: two worker threads."""
        command = [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            "tests.servers.huey_app.huey",
            "-w",
            "2",
            "-k",
            "thread",
        ]
        return self._wait_for_line(self.start("huey", command, env), "consumer started", "the Huey consumer")

    @staticmethod
    def _wait_for_line(started: Server, line: str, what: str) -> Server:
        """Wait until the process logs ``line`` (lower case: matched without case)."""
        deadline = time.monotonic() + WAIT
        while line not in started.log().lower():
            if started.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start:\n{started.log()[-4000:]}")
            time.sleep(0.1)
        return started

    def command(self, env: dict[str, str], *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``python -m django ARGUMENTS`` to its end."""
        return subprocess.run(
            [sys.executable, "-m", "django", *arguments], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def close(self) -> None:
        for server in reversed(self.started):
            server.kill()


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        if response.status != 200:
            raise AssertionError(f"{url} answered {response.status}: {body[:200]!r}")
        return body


def get_many(urls: Sequence[str], concurrency: int = 4) -> list[bytes]:
    """GET each URL, ``concurrency`` at a time; every one must answer 200."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(get, urls))


def counted(broker: str, key: str) -> dict[str, int]:
    client = redis.Redis.from_url(broker, socket_timeout=5)
    try:
        return {k.decode(): int(v) for k, v in client.hgetall(key).items()}
    finally:
        client.close()


def wait_for_deliveries(broker: str, token: str, expected: set[str], timeout: float = WAIT) -> dict[str, int]:
    """Wait until every id in ``expected`` ran once; then the per-id delivery counts (duplicates included)."""
    deadline = time.monotonic() + timeout
    while True:
        ran = counted(broker, ran_key(token))
        if expected <= set(ran):
            break
        if time.monotonic() > deadline:
            missing = sorted(expected - set(ran))
            raise AssertionError(f"{len(missing)} of {len(expected)} committed task(s) never ran: {missing[:5]}")
        time.sleep(0.05)
    return counted(broker, delivered_key(token))


def barrier(broker: str, queue: str) -> None:
    """Wait until the (single, in-order) consumer worked through everything queued up to now.

    A sentinel sent now runs after every message already in the queue, so a
    duplicate delivery, if there is one, has been counted by then.
    """
    from celery import Celery

    token = new_token()
    app = Celery("airlock_servers_barrier", broker=broker, set_as_current=False)
    app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    try:
        app.send_task("servers.record", args=(token, 0), queue=queue)
        deadline = time.monotonic() + WAIT
        while not counted(broker, ran_key(token)):
            if time.monotonic() > deadline:
                raise AssertionError(f"the consumer did not reach a sentinel in {WAIT}s")
            time.sleep(0.05)
    finally:
        app.close()
