"""The ready mark of a request, sent to PostgreSQL without waiting for its answer.

After the view's transaction has committed, a request's scope decides, and its
rows become ``ready`` in one ``UPDATE``. That decision must reach the database
before the response (a process killed after responding must leave ``ready``
rows, which the relay delivers, not ``pending`` ones, which it holds), but the
request need not wait for the answer: once the statement is on its way, the
server runs it whatever happens to this process (a simple query commits
before the server replies, and the server reads a query it was sent even if
the client is gone by then). So with a fast path, on PostgreSQL with psycopg
3, the mark goes out on a connection of this process's own (a
*mark line*, one per database alias) and the request moves on. The answer is
read by whoever uses the line next: the next request's mark, the publisher
once it is idle, or a hand-back of rows to the relay (which must not land
before the mark it would undo).

A mark the server refused, or whose answer was lost with the connection, is
sent again and waited for; if that fails too, it is logged: the rows are then
``pending`` until the publisher marks them ``sent`` (or, if it cannot publish
them either, until the relay holds them, visible and counted). A line that
cannot be opened or written sends nothing: the caller marks the rows on its
own connection, as without a line. Statements on the line are plain SQL with
literal values (ids, states and times only), and run one at a time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import threading
from typing import Any

from airlock.integrations.django.outbox import _own_connections

__all__ = ["MarkLine", "close_lines", "confirm_lines", "line_for"]

_log = logging.getLogger("airlock.integrations.django.outbox")

# Keys of Django's connection parameters that are psycopg's, not libpq's.
_NOT_LIBPQ = {"cursor_factory", "context", "prepare_threshold", "autocommit", "row_factory"}
APPLICATION_NAME = "airlock-outbox-marks"
_WAIT = 10.0  # seconds for one answer: only reached when the server is gone


class MarkLine:
    """One libpq connection whose statements are sent at once and answered later."""

    def __init__(self, conninfo: bytes, role: str | None = None) -> None:
        from psycopg import pq  # type: ignore[import-not-found,unused-ignore]  # not installed for mypy

        self._pq = pq
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._unanswered: list[str] = []  # statements sent whose answers are not read yet
        self._role = role
        self._closed = False
        self._conn = pq.PGconn.connect(conninfo)
        if self._conn.status != pq.ConnStatus.OK:
            error = _text(self._conn.error_message)
            self._conn.finish()
            raise ConnectionError(f"airlock outbox: the mark line could not connect: {error!r}")
        self._set_role()

    def _set_role(self) -> None:
        if self._role:
            self._run(f"SET ROLE {_identifier(self._role)}")

    def send(self, statement: str) -> None:
        """Send ``statement`` and return without its answer; raise ``ConnectionError`` if it cannot be sent."""
        with self._lock:
            if self._closed:  # closed under a caller that had just taken it (a test database's teardown)
                raise ConnectionError("airlock outbox: the mark line is closed")
            self._read_answers()
            try:
                self._conn.send_query(statement.encode())
            except Exception as error:
                self._reconnect()  # for the next mark; this one the caller makes itself
                raise ConnectionError(f"airlock outbox: the mark line could not send: {error}") from error
            self._unanswered.append(statement)

    def confirm(self) -> None:
        """Read every answer not read yet (a refused mark is sent again, and waited for)."""
        with self._lock:
            self._read_answers()

    def close(self) -> None:
        """Read the last answer and close the connection (a fork's child leaves its parent's alone)."""
        with self._lock:
            if self.pid == os.getpid() and not self._closed:
                self._closed = True
                try:
                    self._read_answers()
                finally:
                    self._conn.finish()

    def _read_answers(self) -> None:
        # At most one statement is ever unanswered: send() reads the last answer first.
        if not self._unanswered:
            return
        statement = self._unanswered.pop()
        try:
            error = self._answer()
        except ConnectionError as lost:
            # The answer is lost with the connection: the mark may or may not have run.
            # A mark only moves pending rows to ready, so sending it again is harmless.
            self._reconnect()
            error = str(lost)
        if error is not None:
            self._redo(statement, error)

    def _answer(self) -> str | None:
        """Wait for one statement's results (without holding the GIL); the server's error, if any."""
        pq, conn = self._pq, self._conn
        refused: str | None = None
        while True:
            while True:
                try:
                    conn.consume_input()
                except Exception as failure:
                    raise ConnectionError(str(failure)) from failure
                if not conn.is_busy():
                    break
                ready, _, _ = select.select([conn.socket], [], [], _WAIT)
                if not ready:
                    raise ConnectionError("no answer from the server")
            result = conn.get_result()
            if result is None:
                return refused
            if result.status == pq.ExecStatus.FATAL_ERROR:
                refused = _text(result.error_message)
            elif conn.status != pq.ConnStatus.OK:
                raise ConnectionError("the connection broke")

    def _run(self, statement: str) -> None:
        self._conn.send_query(statement.encode())
        error = self._answer()
        if error is not None:
            raise RuntimeError(error)

    def _redo(self, statement: str, why: str) -> None:
        try:
            self._run(statement)
        except Exception as error:
            _log.error(
                "airlock outbox: a ready mark failed (%s) and again (%s); its rows stay pending until "
                "they are published (or held by the relay): %s",
                why,
                error,
                statement[:200],
            )

    def _reconnect(self) -> None:
        try:
            self._conn.reset()
            self._set_role()
        except Exception as error:  # the redo then fails, and says so
            _log.warning("airlock outbox: the mark line could not reconnect: %s", error)


def _text(message: Any) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_lines: dict[str, MarkLine] = {}
_unusable: set[str] = set()
_guard = threading.Lock()


def line_for(connection: Any) -> MarkLine | None:
    """This process's mark line to ``connection``'s database, or ``None`` where there is none."""
    alias = connection.alias
    line = _lines.get(alias)
    if line is not None and line.pid == os.getpid():
        return line
    if alias in _unusable or connection.vendor != "postgresql":
        return None
    with _guard:
        line = _lines.get(alias)
        if line is not None and line.pid == os.getpid():
            return line
        try:
            line = _open(connection)
        except Exception as error:  # no psycopg 3, or the server refused: mark on the caller's connection
            _unusable.add(alias)
            _log.info("airlock outbox: no mark line for %r (%s); ready marks wait for their answer", alias, error)
            return None
        _lines[alias] = line  # a fork's child replaces its parent's (never closing it: the socket is shared)
        _own_connections.track(alias, functools.partial(_close_line, alias, line))
        return line


def _close_line(alias: str, line: MarkLine) -> None:
    """Close ``line`` (its test database is about to be dropped); the next mark opens a new one."""
    with _guard:
        if _lines.get(alias) is line:
            del _lines[alias]
    with contextlib.suppress(Exception):
        line.close()


def _open(connection: Any) -> MarkLine:
    from psycopg.conninfo import make_conninfo  # type: ignore[import-not-found,unused-ignore]  # psycopg 3 only

    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key not in _NOT_LIBPQ and value is not None
    }
    params.setdefault("application_name", APPLICATION_NAME)  # so that a DBA sees what it is
    role = (connection.settings_dict.get("OPTIONS") or {}).get("assume_role")
    return MarkLine(make_conninfo("", **params).encode(), role)


def confirm_lines(aliases: Any = None) -> None:
    """Read the answers waiting on this process's lines (of ``aliases``, or all)."""
    for alias, line in list(_lines.items()):
        if line.pid == os.getpid() and (aliases is None or alias in aliases):
            line.confirm()


def close_lines() -> None:
    """Read the last answers and close this process's lines (at exit)."""
    for line in list(_lines.values()):
        with contextlib.suppress(Exception):
            line.close()
    _lines.clear()  # their closers stay tracked: closing a closed line again does nothing
