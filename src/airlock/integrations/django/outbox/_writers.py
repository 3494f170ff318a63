"""Writer liveness: which process wrote a row, and whether that process is still alive.

A row stays ``pending`` from its transaction's ``COMMIT`` until its scope
decides (the ready mark). A process killed in between leaves it ``pending``
for good, and nothing in the row says whether its writer is slow or gone. So
each process is a *writer* with an id of its own (a fresh one after a fork),
written into the ``written_by`` column of every row it writes, and before it
writes its first row on a database it takes a lock there that it holds for
its lifetime, on a connection of its own:

- PostgreSQL: ``pg_advisory_lock(key)``, a session lock (per database);
- MariaDB/MySQL: ``GET_LOCK('airlock.w.<key>', 0)`` (per server);
- SQLite: ``flock`` on a file in a directory next to the database file (one
  host); an in-memory database needs none, since no other process sees it.

The lock dies with the process: the server ends a session whose client is
gone (within milliseconds of a SIGKILL, since the kernel closes the socket),
and the kernel drops a dead process's ``flock``. The relay asks the database,
without taking anything (:func:`dead_writers`), and delivers or holds the
rows of writers whose lock is gone.

The cost on the request's path is one dict lookup (:func:`written_by`): the
lock is taken once per process per database alias. A process that cannot take
it (a refused connection, too many connections) writes ``written_by = ''``
and says so once; its rows then keep the old rule (held after
``HOLD_AFTER``), and it tries again :data:`RETRY` seconds later.

Losing the lock's connection while the writer lives (a DBA ended it, the
server restarted) makes the writer look dead: the rows it then leaves
undecided for more than a second are treated as a dead writer's. So on each
new Django connection (``connection_created``: the old ones may have broken)
the writer looks at its lock's socket, a round trip only if the server sent
something, and takes the lock again if it was lost.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import select
import socket
import threading
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from django.db import connections  # type: ignore[import-untyped]  # Django ships no type hints
from django.db.backends.signals import connection_created  # type: ignore[import-untyped]

from airlock.integrations.django.outbox import _own_connections

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite rows carry no writer, and keep HOLD_AFTER
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_PREFIX", "RETRY", "dead_writers", "parse", "writer_id", "written_by"]

_log = logging.getLogger("airlock.integrations.django.outbox")

LOCK_PREFIX = "airlock.w."  # MariaDB/MySQL lock names: server-wide, so prefixed
APPLICATION_NAME = "airlock-outbox-writer"
RETRY = 30.0  # seconds before a process that could not take its lock tries again
_WRITER = re.compile(r"([1-9][0-9]{0,18}):([^:]*):([0-9]+)")
_HOST = socket.gethostname()[:24].replace(":", "-")


def _new_id() -> tuple[int, str]:
    key = secrets.randbits(63) or 1  # positive, and fits PostgreSQL's signed bigint
    return key, f"{key}:{_HOST}:{os.getpid()}"


_key, _id = _new_id()
_held: dict[str, str] = {}  # alias -> what this process's rows carry in written_by there
_locks: dict[str, _Lock] = {}
_retry_at: dict[str, float] = {}  # alias -> monotonic time of the next try, while the lock cannot be taken
_guard = threading.RLock()  # _check_lock may run inside _take (the lock's own connection)
_inherited: list[_Lock] = []  # a fork's parent's locks, kept referenced in the child, never closed


def writer_id() -> str:
    """This process's writer id: ``"<key>:<hostname[:24]>:<pid>"``."""
    return _id


def written_by(connection: Any) -> str:
    """What a row this process writes on ``connection``'s database carries in ``written_by``.

    The writer id, once this process holds its lock there (taken now if it does
    not yet); ``''`` if the lock cannot be taken.
    """
    found = _held.get(connection.alias)
    if found is not None:
        return found
    return _take(connection.alias)


def parse(writer: str) -> tuple[int, str, int] | None:
    """``(key, host, pid)`` of a writer id; ``None`` for anything else (``''``, a scope id of older rows)."""
    match = _WRITER.fullmatch(writer)
    if match is None:
        return None
    return int(match[1]), match[2], int(match[3])


def dead_writers(connection: Any, writers: Iterable[str]) -> list[str]:
    """The writers among ``writers`` whose lock on ``connection``'s database is gone: their process died.

    Read-only: nothing is locked, so a live writer is never disturbed. A writer
    whose liveness cannot be known here (not an id, a SQLite writer of another
    host) is left out, as are live ones.
    """
    keys = {writer: parsed for writer in writers if (parsed := parse(writer)) is not None}
    if not keys:
        return []
    vendor = connection.vendor
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            # A bigint key is stored as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
            cursor.execute(
                "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
                "AND objsubid = 1 AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            held = {row[0] for row in cursor.fetchall()}
        return [writer for writer, (key, _, _) in keys.items() if key not in held]
    if vendor == "mysql":
        names = list(keys)
        dead = []
        with connection.cursor() as cursor:
            for start in range(0, len(names), 100):
                chunk = names[start : start + 100]
                cursor.execute(
                    "SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(chunk)),
                    [f"{LOCK_PREFIX}{keys[writer][0]}" for writer in chunk],
                )
                owners = cursor.fetchone()
                dead += [writer for writer, owner in zip(chunk, owners, strict=True) if owner is None]
        return dead
    if vendor == "sqlite" and fcntl is not None and not connection.is_in_memory_db():
        folder = _folder(connection.settings_dict["NAME"])
        return [writer for writer, (key, host, _) in keys.items() if host == _HOST and _gone(folder, key)]
    return []  # in-memory SQLite (the writer is this process), or a backend without a lock


# -- taking the lock ---------------------------------------------------------------------


class _Lock:
    """One held writer lock: what closes it, and the descriptor a fork's child lets go of."""

    __slots__ = ("alias", "fileno", "pid", "release", "wrapper")

    def __init__(self, alias: str, release: Callable[[], None], fileno: int | None, wrapper: Any = None) -> None:
        self.alias = alias
        self.release = release
        self.fileno = fileno
        self.wrapper = wrapper  # the DatabaseWrapper holding the session, if any
        self.pid = os.getpid()

    def close(self) -> None:
        """Release it (the test database goes away); the next row written on the alias takes it again."""
        if self.pid != os.getpid():
            return  # the parent's, inherited by a fork: closing it would end the parent's session
        with _guard:
            if _locks.get(self.alias) is self:
                del _locks[self.alias]
                _held.pop(self.alias, None)
        with contextlib.suppress(Exception):
            self.release()

    def is_lost(self) -> bool:
        """Whether the server ended the lock's session; a round trip only if its socket has something to read."""
        if self.wrapper is None or self.fileno is None:
            return False
        try:
            # poll(), not select(): a busy process's descriptors may be past select's 1024.
            watch = select.poll()
            watch.register(self.fileno, select.POLLIN)
            readable = watch.poll(0)
        except (OSError, ValueError, AttributeError):  # no poll() (Windows): cannot tell, so keep it
            return False
        if not readable:  # the session asks nothing, so the server has nothing to say: still there
            return False
        # Something came: the server ending the session, or (rarely) a parameter report. Ask.
        try:
            return not self.wrapper.is_usable()
        except Exception:
            return True


def _take(alias: str) -> str:
    with _guard:
        found = _held.get(alias)
        if found is not None:
            return found
        if monotonic() < _retry_at.get(alias, 0.0):
            return ""
        connection = connections[alias]
        try:
            lock = _lock(alias, connection)
        except Exception as error:
            if alias not in _retry_at:
                _log.warning(
                    "airlock outbox: this process could not take its writer lock on %r (%s); until it does, "
                    "its rows there name no writer, and if it dies before a scope decides, the relay holds "
                    "them after HOLD_AFTER instead of delivering them",
                    alias,
                    error,
                )
            _retry_at[alias] = monotonic() + RETRY
            return ""
        _retry_at.pop(alias, None)
        if lock is not None:
            _locks[alias] = lock
            _own_connections.track(alias, lock.close)
        _held[alias] = _id
        return _id


def _lock(alias: str, connection: Any) -> _Lock | None:
    """Take this writer's lock on ``alias``; ``None`` where none is needed (in-memory SQLite)."""
    vendor = connection.vendor
    if vendor == "sqlite":
        if connection.is_in_memory_db():
            return None
        if fcntl is None:
            raise RuntimeError("no fcntl on this platform")
        return _file_lock(alias, _folder(connection.settings_dict["NAME"]))
    if vendor not in ("postgresql", "mysql"):
        raise RuntimeError(f"no writer lock for {vendor}")
    wrapper = connections.create_connection(alias)
    wrapper.inc_thread_sharing()  # closed by whichever thread tears the test database down
    try:
        wrapper.ensure_connection()
        with wrapper.cursor() as cursor:
            if vendor == "postgresql":
                _prepare_postgresql(cursor, wrapper)
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key])
            else:
                # An idle session is ended after wait_timeout (8 hours by default): the longest there is.
                cursor.execute("SET SESSION wait_timeout = 31536000")
                cursor.execute("SELECT GET_LOCK(%s, 0)", [f"{LOCK_PREFIX}{_key}"])
            taken = cursor.fetchone()[0]
    except Exception:
        with contextlib.suppress(Exception):
            wrapper.close()
        raise
    if not taken:
        # The key is this process's own, so another of its connections holds it: an alias
        # to the same database (PostgreSQL) or server (MariaDB) as one it locked already.
        wrapper.close()
        return None
    return _Lock(alias, wrapper.close, _fileno(wrapper.connection), wrapper)


def _prepare_postgresql(cursor: Any, wrapper: Any) -> None:
    """Name the session for a DBA, and let the server find a vanished client host within a minute.

    A SIGKILLed process's socket is closed by its kernel at once; a host that
    loses power closes nothing, and only TCP keepalives end its session (the
    server's defaults wait two hours).
    """
    if not (wrapper.settings_dict.get("OPTIONS") or {}).get("application_name"):
        cursor.execute("SELECT set_config('application_name', %s, false)", [APPLICATION_NAME])
    cursor.execute(
        "SELECT set_config('tcp_keepalives_idle', '15', false), set_config('tcp_keepalives_interval', '5', false), "
        "set_config('tcp_keepalives_count', '3', false)"
    )
    # PostgreSQL 14+: an idle session may be ended after idle_session_timeout, if the server sets one.
    cursor.execute(
        "SELECT set_config('idle_session_timeout', '0', false) WHERE current_setting('idle_session_timeout', true) "
        "IS NOT NULL"
    )


def _fileno(raw: Any) -> int | None:
    """The socket's descriptor of a driver connection (psycopg 2 and 3, mysqlclient; PyMySQL's socket)."""
    holders: list[Any] = [raw, getattr(raw, "_sock", None)]
    for holder in holders:
        with contextlib.suppress(Exception):
            return int(holder.fileno())
    return None


def _folder(name: Any) -> str:
    return f"{os.fspath(name)}-airlock-writers"


def _file_lock(alias: str, folder: str) -> _Lock:
    assert fcntl is not None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{_key}.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(descriptor)
        raise

    def release() -> None:
        # Gone before unlocked: a relay that finds no file knows the writer is gone.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(descriptor)
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # the last writer's

    return _Lock(alias, release, descriptor)


def _gone(folder: str, key: int) -> bool:
    """Whether the writer ``key``'s lock file on this host is unlocked (or removed); a gone one's file goes."""
    assert fcntl is not None
    path = os.path.join(folder, f"{key}.lock")
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # its writer (or a relay before this one) removed it
    try:
        # A second open file description, even in the writer's own process, conflicts.
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False
    with contextlib.suppress(OSError):
        os.unlink(path)  # before the unlock: no relay finds it unlocked twice
    os.close(descriptor)
    return True


# -- process life: exit, fork, broken connections -------------------------------------


def _release_at_exit() -> None:
    """A normal exit removes its lock files (a killed process's are removed by the relay)."""
    for lock in list(_locks.values()):
        if lock.wrapper is None:
            lock.close()


def _forked() -> None:
    """A fork's child: a writer of its own, and none of its parent's locks.

    The child lets go of its copy of each lock's descriptor by putting
    ``/dev/null`` in its place, without closing the driver's connection: a
    driver's close would end the session, releasing the parent's lock, while the
    copy kept open would keep the parent's session (and ``flock``) alive after
    the parent died. The objects stay referenced, so no finalizer closes them.
    """
    global _key, _id, _guard
    _key, _id = _new_id()
    _guard = threading.RLock()  # the parent's may have been held by another thread at the fork
    if _locks:
        null = os.open(os.devnull, os.O_RDWR)
        for lock in _locks.values():
            if lock.fileno is not None:
                with contextlib.suppress(OSError):
                    os.dup2(null, lock.fileno)
        os.close(null)
        _inherited.extend(_locks.values())
    _locks.clear()
    _held.clear()
    _retry_at.clear()


def _check_lock(sender: Any, connection: Any, **kwargs: Any) -> None:
    """A new Django connection (perhaps because the old ones broke): is this process's lock still there?"""
    lock = _locks.get(connection.alias)
    if lock is not None and lock.pid == os.getpid() and lock.is_lost():
        _log.warning("airlock outbox: the writer lock's connection to %r was lost; taking it again", connection.alias)
        _own_connections.untrack(lock.alias, lock.close)
        lock.close()


os.register_at_fork(after_in_child=_forked)
connection_created.connect(_check_lock, weak=False, dispatch_uid="airlock.outbox.writers")
atexit.register(_release_at_exit)
