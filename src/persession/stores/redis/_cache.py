"""Client-side caching (``client_cache=N``) for the stores on persession's own connections."""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any, cast

from ...exceptions import ConfigError
from ._ops import _Arg, _Step
from ._own import Address, AsyncMux, Invalidations, SyncPool, fork_count
from ._own_transport import _command, _is_noscript, _raise_errors


class _CacheEntries:
    """What :class:`_ClientCache` and :class:`_AsyncClientCache` share: the entries, the pending reads, the lock.

    Keeps up to ``size`` ``HGETALL`` replies (raw, decoded afresh on every
    hit, so no request can change another's data), least recently used first
    out. Redis tracks the keys our connections read (``CLIENT TRACKING ON
    REDIRECT ... NOLOOP``) and tells :class:`~persession.stores.redis._own.Invalidations`
    when another connection changes one; every lookup first drains those
    messages. Redis writes a change's answer and its invalidations in the same
    pass of its event loop, so a lookup that starts after that pass (any
    request in another process that follows the change's answer through a
    browser) sees the change. The store's own writes evict (or, for a merge,
    refresh with an ``HGETALL`` in the same round trip) the keys they touch.

    A read's reply is kept only if no invalidation for its key arrived while
    it was in flight (a pending token per key), and only while the
    invalidation connection its connection redirects to is the current one:
    when that connection is lost or the process forks, the cache empties and
    starts over.
    """

    def __init__(self, address: Address, size: int) -> None:
        self._address = address
        self._size = size
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self._pending: dict[str, object] = {}
        self._invalidations: Invalidations | None = None

    def _drained(self) -> bool:
        """Apply the invalidations that have arrived; ``False`` when their connection must be (re)opened."""
        invalidations = self._invalidations
        if invalidations is None or invalidations.forks != fork_count() or invalidations.lost:
            return False
        keys = invalidations.drain()
        if keys is None:  # FLUSHALL, or the connection was lost: everything
            self._forget_all()
            return not invalidations.lost
        for key in keys:
            text = key.decode("utf-8", "surrogateescape")
            self._entries.pop(text, None)
            self._pending.pop(text, None)
        return True

    def _forget_all(self) -> None:
        self._entries.clear()
        self._pending.clear()

    def _retire(self) -> None:
        """Forget everything and drop the invalidation connection (a forked child's copy of it only)."""
        self._forget_all()
        if self._invalidations is not None:
            self._invalidations.close()
        self._invalidations = None

    def _lookup(self, key: str) -> tuple[list[Any] | None, object | None]:
        """Under the lock, drained: the cached reply, or a token to keep the read's reply with (``None``: do not)."""
        raw = self._entries.get(key)
        if raw is not None:
            self._entries.move_to_end(key)
            return raw, None
        if self._invalidations is None:
            return None, None
        token = self._pending[key] = object()
        return None, token

    def _keep(self, key: str, token: object | None, raw: Any) -> None:
        with self._lock:
            if token is None or self._pending.get(key) is not token:
                return  # not tracked, or invalidated (or evicted) while the read was in flight
            del self._pending[key]
            if isinstance(raw, list) and raw:
                self._entries[key] = raw
                self._entries.move_to_end(key)
                if len(self._entries) > self._size:
                    self._entries.popitem(last=False)

    def forget(self, keys: tuple[str, ...] | None) -> None:
        """Forget ``keys`` (a write of ours is about to change them, or just did), or everything for ``None``."""
        with self._lock:
            if keys is None:
                self._forget_all()
                return
            for key in keys:
                self._entries.pop(key, None)
                self._pending.pop(key, None)

    def _settle(self, key: str, token: object | None, result: Any, raw: Any) -> Any:
        """After a merge with an ``HGETALL`` behind it: keep what it read, or forget a session found gone."""
        if result:
            self._keep(key, token, raw)
        else:
            self.forget((key,))
        return result

    def close(self) -> None:
        with self._lock:
            self._retire()


def _check_client_cache(size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError("client_cache", f"must be a number of sessions (an int >= 0), not {size!r}")


def _tracking(invalidations: Invalidations) -> tuple[tuple[_Arg, ...], ...]:
    return (("CLIENT", "TRACKING", "ON", "REDIRECT", invalidations.client_id, "NOLOOP"),)


class _ClientCache(_CacheEntries):
    """Client-side caching for a :class:`RedisStore` on its own connections (``client_cache=N``).

    See :class:`_CacheEntries`. When the invalidation connection is (re)opened,
    the pool retires every connection made before, which redirect elsewhere.
    """

    def __init__(self, pool: SyncPool, size: int) -> None:
        super().__init__(pool.address, size)
        self._pool = pool

    def _begin(self, key: str) -> tuple[list[Any] | None, object | None]:
        with self._lock:
            if not self._drained():
                self._retire()
                invalidations = Invalidations(self._address)
                self._pool.renew(_tracking(invalidations))
                self._invalidations = invalidations
            return self._lookup(key)


class _AsyncClientCache(_CacheEntries):
    """Client-side caching for an :class:`AsyncRedisStore` on its own connection (``client_cache=N``).

    See :class:`_CacheEntries`. The invalidation connection is opened in a
    thread (its socket is only ever read without blocking); then the live
    pipelined connection is switched to it with ``CLIENT TRACKING``, queued
    ahead of every read made afterwards, and new connections send it first.
    Until that has answered, reads are not cached.
    """

    def __init__(self, mux: AsyncMux, size: int) -> None:
        super().__init__(mux.address, size)
        self._mux = mux
        self._opening = False

    async def _begin(self, key: str) -> tuple[list[Any] | None, object | None]:
        with self._lock:
            ready = self._drained()
            if ready:
                return self._lookup(key)
            self._retire()
            if self._opening:
                return None, None  # another task is opening it: this read goes uncached
            self._opening = True
        try:
            loop = asyncio.get_running_loop()
            invalidations = await loop.run_in_executor(None, Invalidations, self._address)
            try:
                self._mux.setup = _tracking(invalidations)
                _raise_errors(await self._mux.execute(self._mux.setup), tolerant=False)
            except BaseException:
                invalidations.close()
                raise
            with self._lock:
                self._invalidations = invalidations
        finally:
            self._opening = False
        return None, None  # this read was not tracked yet when it began: not cached

    async def load(self, key: str) -> list[Any]:
        """See :meth:`_ClientCache.load`."""
        raw, token = await self._begin(key)
        if raw is not None:
            return raw
        try:
            (reply,) = _raise_errors(await self._mux.execute((("HGETALL", key),)), tolerant=False)
        except BaseException:
            self.forget((key,))
            raise
        self._keep(key, token, reply)
        return cast("list[Any]", reply)

    async def merge(self, key: str, step: _Step) -> Any:
        """See :meth:`_ClientCache.merge`."""
        self.forget((key,))
        _, token = await self._begin(key)
        read = ("HGETALL", key)
        try:
            replies = await self._mux.execute((_command(step, cached=True), read))
            if _is_noscript(replies[0]):
                replies = await self._mux.execute((_command(step, cached=False), read))
            result, raw = _raise_errors(replies, tolerant=False)
        except BaseException:
            self.forget((key,))
            raise
        return self._settle(key, token, result, raw)
