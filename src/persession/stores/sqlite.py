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
import functools
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..records import Change, Record, SessionInfo
from ._sqlite_db import _Database

__all__ = ["AsyncSqliteStore", "SqliteStore", "default_sqlite_path"]

_T = TypeVar("_T")

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
        self._db = _Database(
            default_sqlite_path() if path is None else path, table, busy_timeout, purge_interval, clock, HAS_RETURNING
        )

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
        self._db = _Database(
            default_sqlite_path() if path is None else path, table, busy_timeout, purge_interval, clock, HAS_RETURNING
        )
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
