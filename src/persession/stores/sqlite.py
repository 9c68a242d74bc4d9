"""The embedded default store: one SQLite file shared by a host's processes.

Needs no server. Every worker process on the host opens the same file, so a
session created by one is seen by all, and sessions survive restarts. The
file uses WAL mode (readers never block the writer); writes are short
``BEGIN IMMEDIATE`` transactions, so a merge is atomic across processes.
Expired rows are never returned and are purged every ``purge_interval``
seconds by whichever process writes.
``load_touch`` (a rolling session's load) is one ``UPDATE ... RETURNING``
statement on SQLite 3.35+ (the capped expiry computed by SQLite from the
stored ``created``), else a ``SELECT`` and an ``UPDATE`` in one transaction.

Default location: ``$PERSESSION_SQLITE_PATH`` if set, else
``$XDG_STATE_HOME/persession/sessions.db`` (``~/.local/state/persession/
sessions.db``); the directory is created on first use. Use one file per
application: the file is the namespace.

Not for several hosts: SQLite over NFS or similar does not lock reliably. Use
Redis or MongoDB there.

**Per-user index.** A second table, created with the sessions table, holds one
row per indexed session::

    CREATE TABLE <table>_users (user TEXT, sid TEXT, PRIMARY KEY (user, sid)) WITHOUT ROWID

Its rows carry no expiry of their own: a session's liveness is always read
from the sessions table (so a session kept alive by later requests stays
listed and revocable). ``user_sessions`` joins the two tables and deletes the
rows whose session is gone or expired; ``index_user`` inserts the row (only
for a live session) and deletes the user's dead rows, and ``revoke_user``
deletes the user's sessions and rows, each in one ``BEGIN IMMEDIATE``
transaction; the periodic purge also deletes rows whose session no longer
exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeGuard, TypeVar

from ..exceptions import ConfigError, StoreError, StoreUnavailable
from ..records import Change, Record, SessionInfo, dumps, loads, rolled_expiry

__all__ = ["AsyncSqliteStore", "SqliteStore", "default_sqlite_path"]

_T = TypeVar("_T")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
security_log: logging.Logger = logging.getLogger("persession.security")

#: Default seconds a writer waits for another process's write lock.
DEFAULT_BUSY_TIMEOUT = 5.0
#: ``UPDATE ... RETURNING`` (SQLite 3.35+) makes ``load_touch`` one statement; older
#: libraries use a ``BEGIN IMMEDIATE`` transaction of a ``SELECT`` and an ``UPDATE``.
HAS_RETURNING: bool = sqlite3.sqlite_version_info >= (3, 35, 0)


def default_sqlite_path() -> Path:
    """Where the default store keeps its file (see the module docs)."""
    explicit = os.environ.get("PERSESSION_SQLITE_PATH")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "persession" / "sessions.db"


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
    """The SQL, shared by both flavours; one connection per thread and process."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        table: str,
        busy_timeout: float,
        purge_interval: float,
        clock: Callable[[], float],
    ) -> None:
        if not _TABLE.match(table):
            raise ConfigError("table", f"{table!r} is not a plain SQL identifier")
        if busy_timeout < 0:
            raise ConfigError("busy_timeout", "must be zero or more seconds")
        self.path = Path(path) if path is not None else default_sqlite_path()
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
        self.returning = HAS_RETURNING
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


class SqliteStore:
    """The embedded default store, synchronous flavour (WSGI).

    :param path: the database file; default :func:`default_sqlite_path`.
    :param table: the table name, default ``"persession_sessions"``.
    :param busy_timeout: seconds a writer waits for another process's lock
        before :class:`~persession.StoreUnavailable`; default 5.
    :param purge_interval: seconds between purges of expired rows; default 300.
    :param clock: returns the current Unix time.
    :raises ConfigError: a bad table name or timeout.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        table: str = "persession_sessions",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        purge_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = _Database(path, table, busy_timeout, purge_interval, clock)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path

    def load(self, sid: str) -> Record | None:
        return self._db.load(sid)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry: one ``UPDATE ... RETURNING`` (SQLite 3.35+).

        Older SQLite libraries: a ``SELECT`` and an ``UPDATE`` in one
        ``BEGIN IMMEDIATE`` transaction. See :class:`~persession.stores.RollingLoad`.
        """
        return self._db.load_touch(sid, idle, absolute)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._db.save(sid, record, replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self._db.merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        return self._db.touch(sid, expires)

    def delete(self, sid: str) -> None:
        self._db.delete(sid)

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Record that the live session ``sid`` belongs to ``user``, dropping the user's dead rows: one transaction."""
        self._db.index_user(user, sid)

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first (one join); dead index rows are deleted."""
        return self._db.user_sessions(user)

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` and their index rows in one transaction; return the live ids."""
        return self._db.revoke_user(user)

    def purge(self) -> int:
        """Delete expired rows now; return how many."""
        return self._db.purge()

    def close(self) -> None:
        """Close this process's connections (they reopen on next use)."""
        self._db.close()

    def to_async(self) -> AsyncSqliteStore:
        """An :class:`AsyncSqliteStore` on the same file and table."""
        db = self._db
        return AsyncSqliteStore(
            db.path, table=db.table, busy_timeout=db.busy_timeout, purge_interval=db.purge_interval, clock=db.clock
        )


class AsyncSqliteStore:
    """The embedded default store, asyncio flavour (ASGI).

    Queries run on a thread of the store's own, which owns the connection;
    nothing runs on the event loop's default executor or asgiref's shared
    thread. Parameters as :class:`SqliteStore`.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        table: str = "persession_sessions",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        purge_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = _Database(path, table, busy_timeout, purge_interval, clock)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db.path

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persession-sqlite")
            self._executor_pid = os.getpid()
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(function, *args))

    async def load(self, sid: str) -> Record | None:
        return await self._run(self._db.load, sid)

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`SqliteStore.load_touch`."""
        return await self._run(self._db.load_touch, sid, idle, absolute)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        await self._run(self._db.save, sid, record, replaces)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        return await self._run(self._db.merge, sid, change, expires)

    async def touch(self, sid: str, expires: float) -> bool:
        return await self._run(self._db.touch, sid, expires)

    async def delete(self, sid: str) -> None:
        await self._run(self._db.delete, sid)

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`SqliteStore.index_user`."""
        await self._run(self._db.index_user, user, sid)

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`SqliteStore.user_sessions`."""
        return await self._run(self._db.user_sessions, user)

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`SqliteStore.revoke_user`."""
        return await self._run(self._db.revoke_user, user)

    async def purge(self) -> int:
        """Delete expired rows now; return how many."""
        return await self._run(self._db.purge)

    async def close(self) -> None:
        """Close the connection and stop the store's thread (both restart on next use)."""
        if self._executor is not None:
            await self._run(self._db.close)
            self._executor.shutdown(wait=True)
            self._executor = None
