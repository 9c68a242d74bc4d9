"""In-process stores for tests and single-process development.

Sessions live in this process's memory and die with it: use SQLite, Redis or
MongoDB for anything a restart or a second worker must see. Records are kept
as JSON text, so the memory store refuses exactly what the others refuse and
never shares mutable objects between requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..records import Change, Record, dumps, loads

__all__ = ["AsyncMemoryStore", "MemoryStore"]

# sid -> (JSON data, created, accessed, expires)
_Row = tuple[str, float, float, float]


class _Table:
    """The shared dict behind both flavours; every method is atomic under one lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.rows: dict[str, _Row] = {}
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

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._table.save(sid, record, replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self._table.merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        return self._table.touch(sid, expires)

    def delete(self, sid: str) -> None:
        self._table.delete(sid)

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

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self._table.save(sid, record, replaces)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self._table.merge(sid, change, expires)

    async def touch(self, sid: str, expires: float) -> bool:
        return self._table.touch(sid, expires)

    async def delete(self, sid: str) -> None:
        self._table.delete(sid)

    async def close(self) -> None:
        """Nothing to release."""
