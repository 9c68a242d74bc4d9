"""In-process stores for tests and single-process development.

Sessions live in this process's memory and die with it: use SQLite, Redis or
MongoDB for anything a restart or a second worker must see. Records are kept
as JSON text, so the memory store refuses exactly what the others refuse and
never shares mutable objects between requests.

The per-user index is a dict from user to the set of that user's session
ids, in the same table and under the same lock as the sessions: entries
whose session is gone or expired are dropped whenever the user's entries
are read or written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..records import Change, Record, SessionInfo, dumps, loads, rolled_expiry

__all__ = ["AsyncMemoryStore", "MemoryStore"]

# sid -> (JSON data, created, accessed, expires)
_Row = tuple[str, float, float, float]


class _Table:
    """The shared dict behind both flavours; every method is atomic under one lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.rows: dict[str, _Row] = {}
        self.users: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self.clock = clock

    def _live(self, sid: str, now: float) -> _Row | None:
        row = self.rows.get(sid)
        if row is None:
            return None
        if row[3] <= now:
            del self.rows[sid]
            return None
        return row

    def load(self, sid: str) -> Record | None:
        with self.lock:
            row = self._live(sid, self.clock())
        if row is None:
            return None
        return Record(loads(row[0]), created=row[1], accessed=row[2], expires=row[3])

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        with self.lock:
            now = self.clock()
            row = self._live(sid, now)
            if row is None:
                return None
            expires = rolled_expiry(now, row[1], idle, absolute)
            if expires <= now:  # past its absolute limit: dead now
                del self.rows[sid]
                return None
            row = self.rows[sid] = (row[0], row[1], now, expires)
        return Record(loads(row[0]), created=row[1], accessed=row[2], expires=row[3])

    def save(self, sid: str, record: Record, replaces: str | None) -> None:
        text = dumps(record.data)
        with self.lock:
            if replaces is not None:
                self.rows.pop(replaces, None)
            self.rows[sid] = (text, record.created, record.accessed, record.expires)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        with self.lock:
            now = self.clock()
            row = self._live(sid, now)
            if row is None:
                return False
            self.rows[sid] = (dumps(change.apply(loads(row[0]))), row[1], now, expires)
            return True

    def touch(self, sid: str, expires: float) -> bool:
        with self.lock:
            now = self.clock()
            row = self._live(sid, now)
            if row is None:
                return False
            self.rows[sid] = (row[0], row[1], now, expires)
            return True

    def delete(self, sid: str) -> None:
        with self.lock:
            self.rows.pop(sid, None)

    def _prune(self, user: str, now: float) -> dict[str, _Row]:
        """The user's live rows by id; dead entries (and an emptied index) are dropped. Hold the lock."""
        sids = self.users.get(user)
        if sids is None:
            return {}
        live = {sid: row for sid in sids if (row := self._live(sid, now)) is not None}
        if live:
            self.users[user] = set(live)
        else:
            del self.users[user]
        return live

    def index_user(self, user: str, sid: str) -> None:
        with self.lock:
            now = self.clock()
            self._prune(user, now)
            if self._live(sid, now) is not None:
                self.users.setdefault(user, set()).add(sid)

    def user_sessions(self, user: str) -> list[SessionInfo]:
        with self.lock:
            live = self._prune(user, self.clock())
        return _infos(live)

    def revoke_user(self, user: str) -> list[str]:
        with self.lock:
            now = self.clock()
            sids = self.users.pop(user, set())
            revoked = [sid for sid in sids if self._live(sid, now) is not None]
            for sid in sids:
                self.rows.pop(sid, None)
        return sorted(revoked)


def _infos(rows: dict[str, _Row]) -> list[SessionInfo]:
    """Rows as :class:`SessionInfo`, oldest first."""
    infos = [SessionInfo(sid, created=row[1], accessed=row[2], expires=row[3]) for sid, row in rows.items()]
    return sorted(infos, key=lambda info: (info.created, info.sid))


class MemoryStore:
    """A synchronous store in this process's memory (tests, development).

    :param clock: returns the current Unix time.

    .. versionadded:: 0.1
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._table = _Table(clock)

    def __len__(self) -> int:
        """The number of records held, expired ones included until next read."""
        return len(self._table.rows)

    def load(self, sid: str) -> Record | None:
        return self._table.load(sid)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry under the lock (see :class:`~persession.stores.RollingLoad`)."""
        return self._table.load_touch(sid, idle, absolute)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._table.save(sid, record, replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self._table.merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        return self._table.touch(sid, expires)

    def delete(self, sid: str) -> None:
        self._table.delete(sid)

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Record that the live session ``sid`` belongs to ``user`` (see :class:`~persession.stores.UserIndex`)."""
        self._table.index_user(user, sid)

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        return self._table.user_sessions(user)

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` at once; return the ids of the live ones."""
        return self._table.revoke_user(user)

    def close(self) -> None:
        """Nothing to release."""

    def to_async(self) -> AsyncMemoryStore:
        """An :class:`AsyncMemoryStore` sharing this store's records."""
        twin = AsyncMemoryStore()
        twin._table = self._table
        return twin


class AsyncMemoryStore:
    """The asyncio twin of :class:`MemoryStore`.

    .. versionadded:: 0.1
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._table = _Table(clock)

    def __len__(self) -> int:
        """The number of records held, expired ones included until next read."""
        return len(self._table.rows)

    async def load(self, sid: str) -> Record | None:
        return self._table.load(sid)

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`MemoryStore.load_touch`."""
        return self._table.load_touch(sid, idle, absolute)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._table.save(sid, record, replaces)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self._table.merge(sid, change, expires)

    async def touch(self, sid: str, expires: float) -> bool:
        return self._table.touch(sid, expires)

    async def delete(self, sid: str) -> None:
        self._table.delete(sid)

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`MemoryStore.index_user`."""
        self._table.index_user(user, sid)

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`MemoryStore.user_sessions`."""
        return self._table.user_sessions(user)

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`MemoryStore.revoke_user`."""
        return self._table.revoke_user(user)

    async def close(self) -> None:
        """Nothing to release."""
