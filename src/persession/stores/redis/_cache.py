"""Client-side caching (``client_cache=N``) for the stores on persession's own connections."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from typing import Any

from ...exceptions import ConfigError
from ._ops import _Arg, _Call, _commands, _Op, _Read
from ._own import Address, Invalidations, ReplyError, Sent, fork_count
from ._own_transport import _OwnAsync, _OwnSync, _raise_errors
from ._scripts import _Script
from ._transport import _AsyncTransport, _SyncTransport


class _CacheEntries:
    """The cache both caching transports keep: the entries, the pending reads, the lock.

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
        self.address = address
        self._size = size
        self.lock = threading.Lock()
        self._entries: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self._pending: dict[str, object] = {}
        self.invalidations: Invalidations | None = None

    def drained(self) -> bool:
        """Apply the invalidations that have arrived; ``False`` when their connection must be (re)opened."""
        invalidations = self.invalidations
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

    def retire(self) -> None:
        """Forget everything and drop the invalidation connection (a forked child's copy of it only)."""
        self._forget_all()
        if self.invalidations is not None:
            self.invalidations.close()
        self.invalidations = None

    def lookup(self, key: str) -> tuple[list[Any] | None, object | None]:
        """Under the lock, drained: the cached reply, or a token to keep the read's reply with (``None``: do not)."""
        raw = self._entries.get(key)
        if raw is not None:
            self._entries.move_to_end(key)
            return raw, None
        if self.invalidations is None:
            return None, None
        token = self._pending[key] = object()
        return None, token

    def keep(self, key: str, token: object | None, raw: Any) -> None:
        with self.lock:
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
        with self.lock:
            if keys is None:
                self._forget_all()
                return
            for key in keys:
                self._entries.pop(key, None)
                self._pending.pop(key, None)

    def settle(self, key: str, token: object | None, result: Any, raw: Any) -> Any:
        """After a merge with an ``HGETALL`` behind it: keep what it read, or forget a session found gone."""
        if result:
            self.keep(key, token, raw)
        else:
            self.forget((key,))
        return result

    def close(self) -> None:
        with self.lock:
            self.retire()


def _check_client_cache(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError("client_cache", f"must be a number of sessions (an int >= 0), not {size!r}")
    return size


def _tracking(invalidations: Invalidations) -> tuple[tuple[_Arg, ...], ...]:
    return (("CLIENT", "TRACKING", "ON", "REDIRECT", invalidations.client_id, "NOLOOP"),)


def _forgets(op: _Op) -> tuple[str, ...] | None:
    """The keys a cache must forget around ``op`` (``None``: everything: the op does not say which it changes)."""
    if type(op) is _Call and op.wide:
        return None
    return op.keys


class _Hit:
    """What :meth:`_CachingSync.send` gives for a read: the cached reply, or the read sent and its token."""

    __slots__ = ("raw", "sent", "token")

    def __init__(self, raw: list[Any] | None, sent: Sent | None, token: object | None) -> None:
        self.raw = raw
        self.sent = sent
        self.token = token


class _CachingSync(_SyncTransport):
    """Client-side caching (``client_cache=N``) around a :class:`RedisStore`'s own connections.

    See :class:`_CacheEntries`. When the invalidation connection is (re)opened,
    the pool retires every connection made before, which redirect elsewhere.
    """

    splits = True

    def __init__(self, inner: _OwnSync, size: int) -> None:
        self._entries = entries = _CacheEntries(inner.pool.address, size)
        super().__init__(owned=(entries.close, inner.close), twin=inner._twin)
        self._inner = inner
        self._pool = inner.pool

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        self._inner.preload(scripts)

    def _begin(self, key: str) -> tuple[list[Any] | None, object | None]:
        entries = self._entries
        with entries.lock:
            if not entries.drained():
                entries.retire()
                invalidations = Invalidations(entries.address)
                self._pool.renew(_tracking(invalidations))
                entries.invalidations = invalidations
            return entries.lookup(key)

    def run(self, op: _Op) -> Any:
        return self.receive(op, self.send(op))

    def send(self, op: _Op) -> Any:
        entries = self._entries
        if type(op) is _Read:
            key = op.key
            raw, token = self._begin(key)
            if raw is not None:
                return _Hit(raw, None, None)
            try:
                return _Hit(None, self._inner.send(op), token)
            except BaseException:
                entries.forget(op.keys)
                raise
        keys = _forgets(op)
        entries.forget(keys)
        try:
            if type(op) is _Call and op.reads_back is not None:
                # A merge: the merged record comes back in the same round trip.
                _, token = self._begin(op.reads_back)
                return _Hit(None, self._pool.send((*_commands(op), ("HGETALL", op.reads_back))), token)
            return self._inner.send(op)
        except BaseException:
            entries.forget(keys)
            raise

    def receive(self, op: _Op, sent: Any) -> Any:
        entries = self._entries
        if type(op) is _Read:
            if sent.sent is None:
                return sent.raw
            try:
                reply = self._inner.receive(op, sent.sent)
            except BaseException:
                entries.forget(op.keys)
                raise
            if not isinstance(reply, Exception):
                entries.keep(op.key, sent.token, reply)
            return reply
        keys = _forgets(op)
        try:
            if type(op) is _Call and op.reads_back is not None:
                result, raw = self._pool.receive(sent.sent)
                if isinstance(result, ReplyError):  # NOSCRIPT (the read ran before the script did) or a failure
                    entries.forget(keys)
                    return self._inner.answer(op, result)
                return entries.settle(op.reads_back, sent.token, result, raw)
            reply = self._inner.receive(op, sent)
        except BaseException:
            entries.forget(keys)
            raise
        entries.forget(keys)
        return reply


class _CachingAsync(_AsyncTransport):
    """Client-side caching (``client_cache=N``) around an :class:`AsyncRedisStore`'s own connection.

    See :class:`_CacheEntries`. The invalidation connection is opened in a
    thread (its socket is only ever read without blocking); then the live
    pipelined connection is switched to it with ``CLIENT TRACKING``, queued
    ahead of every read made afterwards, and new connections send it first.
    Until that has answered, reads are not cached.
    """

    def __init__(self, inner: _OwnAsync, size: int) -> None:
        self._entries = entries = _CacheEntries(inner.mux.address, size)

        async def close_entries() -> None:
            entries.close()

        super().__init__(owned=(close_entries, inner.close))
        self._inner = inner
        self._mux = inner.mux
        self._opening = False

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        self._inner.preload(scripts)

    def messages(self, channel: str, poll: float) -> AsyncIterator[bytes | str]:
        return self._inner.messages(channel, poll)

    async def _begin(self, key: str) -> tuple[list[Any] | None, object | None]:
        entries = self._entries
        with entries.lock:
            if entries.drained():
                return entries.lookup(key)
            entries.retire()
            if self._opening:
                return None, None  # another task is opening it: this read goes uncached
            self._opening = True
        try:
            loop = asyncio.get_running_loop()
            invalidations = await loop.run_in_executor(None, Invalidations, entries.address)
            try:
                _raise_errors(await self._mux.renew(_tracking(invalidations)), tolerant=False)
            except BaseException:
                invalidations.close()
                raise
            with entries.lock:
                entries.invalidations = invalidations
        finally:
            self._opening = False
        return None, None  # this read was not tracked yet when it began: not cached

    async def run(self, op: _Op) -> Any:
        entries = self._entries
        if type(op) is _Read:
            key = op.key
            raw, token = await self._begin(key)
            if raw is not None:
                return raw
            try:
                reply = await self._inner.run(op)
            except BaseException:
                entries.forget(op.keys)
                raise
            if not isinstance(reply, Exception):
                entries.keep(key, token, reply)
            return reply
        keys = _forgets(op)
        entries.forget(keys)
        try:
            if type(op) is _Call and op.reads_back is not None:
                key = op.reads_back
                _, token = await self._begin(key)
                result, raw = await self._mux.execute((*_commands(op), ("HGETALL", key)))
                if isinstance(result, ReplyError):  # see _CachingSync.receive
                    entries.forget(keys)
                    return await self._inner.answer(op, result)
                return entries.settle(key, token, result, raw)
            reply = await self._inner.run(op)
        except BaseException:
            entries.forget(keys)
            raise
        entries.forget(keys)
        return reply
