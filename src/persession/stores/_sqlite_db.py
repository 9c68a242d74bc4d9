"""The SQL of the SQLite stores, shared by both flavours: one connection per thread and process."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeGuard

from ..exceptions import ConfigError, StoreError, StoreUnavailable
from ..records import Change, Record, SessionInfo, dumps, loads, rolled_expiry

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
security_log: logging.Logger = logging.getLogger("persession.security")


def _finite(value: object) -> TypeGuard[float]:
    """A stored time is a finite int or float (SQLite hands back what was written, whatever the column type)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """Translate sqlite3's errors: the one place this module does so."""
    try:
        yield
    except sqlite3.OperationalError as error:
        message = str(error)
        if "locked" in message or "busy" in message or "unable to open" in message or "disk I/O" in message:
            raise StoreUnavailable(f"SQLite store unavailable: {message}", error) from error
        raise StoreError(f"SQLite store failed: {message}", error) from error
    except sqlite3.Error as error:
        raise StoreError(f"SQLite store failed: {error}", error) from error
    except OSError as error:  # the directory cannot be created or read
        raise StoreUnavailable(f"SQLite store unavailable: {error}", error) from error


class _Database:
    """The SQL, shared by both flavours; one connection per thread and process.

    ``path`` (already defaulted) and ``returning`` come from :mod:`persession.stores.sqlite`, which owns
    :func:`~persession.stores.sqlite.default_sqlite_path` and ``HAS_RETURNING``: this module imports nothing back.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str,
        busy_timeout: float,
        purge_interval: float,
        clock: Callable[[], float],
        returning: bool,
    ) -> None:
        if not _TABLE.match(table):
            raise ConfigError("table", f"{table!r} is not a plain SQL identifier")
        if busy_timeout < 0:
            raise ConfigError("busy_timeout", "must be zero or more seconds")
        self.path = Path(path)
        self.table = table
        self.busy_timeout = busy_timeout
        self.purge_interval = purge_interval
        self.clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._last_purge = 0.0
        t = table
        self._sql_load = f"SELECT data, created, accessed, expires FROM {t} WHERE id = ? AND expires > ?"  # noqa: S608  (identifier validated above)
        self._sql_save = f"INSERT OR REPLACE INTO {t} (id, data, created, accessed, expires) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
        self._sql_delete = f"DELETE FROM {t} WHERE id = ?"  # noqa: S608
        self._sql_touch = f"UPDATE {t} SET accessed = ?, expires = ? WHERE id = ? AND expires > ?"  # noqa: S608
        self._sql_data = f"SELECT data FROM {t} WHERE id = ? AND expires > ?"  # noqa: S608
        self._sql_update = f"UPDATE {t} SET data = ?, accessed = ?, expires = ? WHERE id = ?"  # noqa: S608
        self._sql_purge = f"DELETE FROM {t} WHERE expires <= ?"  # noqa: S608
        #: ``load_touch`` in one statement (SQLite 3.35+), else in a transaction (tests force that).
        self.returning = returning
        self._sql_load_touch = (
            f"UPDATE {t} SET accessed = :now, expires = :idle_expires WHERE id = :sid AND expires > :now"  # noqa: S608
            " RETURNING data, created, accessed, expires"
        )
        self._sql_load_touch_capped = (
            f"UPDATE {t} SET accessed = :now, expires = min(:idle_expires, created + :absolute)"  # noqa: S608
            " WHERE id = :sid AND expires > :now RETURNING data, created, accessed, expires"
        )
        u = f"{t}_users"
        self.users_table = u
        self._sql_index = f"INSERT OR IGNORE INTO {u} (user, sid) SELECT ?, id FROM {t} WHERE id = ? AND expires > ?"  # noqa: S608
        self._sql_user_sessions = (
            f"SELECT u.sid, s.created, s.accessed, s.expires FROM {u} AS u"  # noqa: S608
            f" LEFT JOIN {t} AS s ON s.id = u.sid AND s.expires > ? WHERE u.user = ?"
        )
        self._sql_unindex = f"DELETE FROM {u} WHERE user = ? AND sid = ?"  # noqa: S608
        self._sql_prune_user = (
            f"DELETE FROM {u} WHERE user = ?"  # noqa: S608
            f" AND NOT EXISTS (SELECT 1 FROM {t} WHERE id = {u}.sid AND expires > ?)"
        )
        self._sql_revoke_ids = (
            f"SELECT s.id FROM {u} AS u JOIN {t} AS s ON s.id = u.sid AND s.expires > ? WHERE u.user = ?"  # noqa: S608
        )
        self._sql_revoke_sessions = f"DELETE FROM {t} WHERE id IN (SELECT sid FROM {u} WHERE user = ?)"  # noqa: S608
        self._sql_revoke_index = f"DELETE FROM {u} WHERE user = ?"  # noqa: S608
        self._sql_purge_index = f"DELETE FROM {u} WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE id = {u}.sid)"  # noqa: S608

    def _connect(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # Forked: the parent's connections must not be used (or closed) here.
            self._pid = os.getpid()
            self._local = threading.local()
            self._connections = []
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        with _map_errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._enable_wal(connection)
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    "id TEXT PRIMARY KEY, data TEXT NOT NULL, created REAL NOT NULL,"
                    " accessed REAL NOT NULL, expires REAL NOT NULL) WITHOUT ROWID"
                )
                connection.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_expires ON {self.table} (expires)")
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.users_table} ("
                    "user TEXT NOT NULL, sid TEXT NOT NULL, PRIMARY KEY (user, sid)) WITHOUT ROWID"
                )
            except BaseException:
                connection.close()  # not yet registered: nothing else would close it
                raise
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite reports
        # "database is locked" at once, without waiting busy_timeout, when
        # several processes open a new file together: retry until the deadline.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def load(self, sid: str) -> Record | None:
        now = self.clock()
        with _map_errors():
            row = self._connect().execute(self._sql_load, (sid, now)).fetchone()
        return self._record(row, now)

    def _record(self, row: tuple[object, object, object, object] | None, now: float) -> Record | None:
        if row is None:
            return None
        data, created, accessed, expires = row
        # A row written by hand or by another program: SQLite's REAL affinity keeps text,
        # blobs and infinities as they are, and the expiry filter in SQL lets text through.
        if not (_finite(created) and _finite(accessed) and _finite(expires)):
            security_log.warning("malformed session record in SQLite table %s ignored", self.table)
            return None
        if expires <= now:  # expired, or just past its absolute limit
            return None
        try:
            if not isinstance(data, (str, bytes)):
                raise TypeError("the data column holds neither text nor a blob")
            loaded = loads(data)
        except (ValueError, TypeError):
            security_log.warning("malformed session record in SQLite table %s ignored", self.table)
            return None
        return Record(loaded, created=created, accessed=accessed, expires=expires)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        now = self.clock()
        if not self.returning:
            return self._load_touch_transaction(sid, idle, absolute, now)
        sql = self._sql_load_touch if absolute is None else self._sql_load_touch_capped
        parameters = {"now": now, "idle_expires": now + idle, "absolute": absolute, "sid": sid}
        with _map_errors():
            # fetchall: the statement runs to its end, so the write is committed at once.
            rows = self._connect().execute(sql, parameters).fetchall()
        return self._record(rows[0] if rows else None, now)

    def _load_touch_transaction(self, sid: str, idle: float, absolute: float | None, now: float) -> Record | None:
        """:meth:`load_touch` for SQLite before 3.35: a ``SELECT`` and an ``UPDATE`` in one transaction."""
        with _map_errors():
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(self._sql_load, (sid, now)).fetchone()
                if row is None or not _finite(row[1]):
                    connection.execute("ROLLBACK")
                    return self._record(row, now)  # None, or a malformed row reported as load() does
                expires = rolled_expiry(now, row[1], idle, absolute)
                connection.execute(self._sql_touch, (now, expires, sid, now))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return self._record((row[0], row[1], now, expires), now)

    def save(self, sid: str, record: Record, replaces: str | None) -> None:
        text = dumps(record.data)
        with _map_errors():
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                if replaces is not None:
                    connection.execute(self._sql_delete, (replaces,))
                connection.execute(self._sql_save, (sid, text, record.created, record.accessed, record.expires))
                self._maybe_purge(connection)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        with _map_errors():
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                now = self.clock()
                row = connection.execute(self._sql_data, (sid, now)).fetchone()
                if row is None:
                    connection.execute("ROLLBACK")
                    return False
                try:
                    current = loads(row[0])
                except (ValueError, TypeError):
                    security_log.warning("malformed session record in SQLite table %s replaced", self.table)
                    current = {}
                connection.execute(self._sql_update, (dumps(change.apply(current)), now, expires, sid))
                connection.execute("COMMIT")
                return True
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def touch(self, sid: str, expires: float) -> bool:
        now = self.clock()
        with _map_errors():
            cursor = self._connect().execute(self._sql_touch, (now, expires, sid, now))
        return cursor.rowcount > 0

    def delete(self, sid: str) -> None:
        with _map_errors():
            self._connect().execute(self._sql_delete, (sid,))

    def index_user(self, user: str, sid: str) -> None:
        with _map_errors():
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                now = self.clock()
                connection.execute(self._sql_prune_user, (user, now))
                connection.execute(self._sql_index, (user, sid, now))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def user_sessions(self, user: str) -> list[SessionInfo]:
        with _map_errors():
            connection = self._connect()
            rows = connection.execute(self._sql_user_sessions, (self.clock(), user)).fetchall()
            dead = [(user, row[0]) for row in rows if row[1] is None]
            if dead:  # gone or expired: they never come back (ids are not reused)
                connection.executemany(self._sql_unindex, dead)
        infos = [
            SessionInfo(row[0], created=row[1], accessed=row[2], expires=row[3]) for row in rows if row[1] is not None
        ]
        return sorted(infos, key=lambda info: (info.created, info.sid))

    def revoke_user(self, user: str) -> list[str]:
        with _map_errors():
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                revoked = [row[0] for row in connection.execute(self._sql_revoke_ids, (self.clock(), user))]
                connection.execute(self._sql_revoke_sessions, (user,))
                connection.execute(self._sql_revoke_index, (user,))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return sorted(revoked)

    def _maybe_purge(self, connection: sqlite3.Connection) -> None:
        now = self.clock()
        if now - self._last_purge >= self.purge_interval:
            self._last_purge = now
            connection.execute(self._sql_purge, (now,))
            connection.execute(self._sql_purge_index)

    def purge(self) -> int:
        with _map_errors():
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                purged = connection.execute(self._sql_purge, (self.clock(),)).rowcount
                connection.execute(self._sql_purge_index)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return purged

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        if self._pid == os.getpid():
            for connection in connections:
                connection.close()
        self._local = threading.local()
