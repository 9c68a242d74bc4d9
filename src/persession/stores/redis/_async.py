"""AsyncRedisStore: the asyncio Redis store (ASGI)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast

import redis.asyncio.cluster
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ...exceptions import ConfigError, StoreUnavailable
from ...records import Change, Record, SessionInfo
from ._cache import _AsyncClientCache, _check_client_cache
from ._connect_redis import (
    _NO_CHANGE,
    _check_layout,
    _connect_idle,
    _connect_load_result,
    _connect_save_steps,
    _connect_touched,
    _connect_write_result,
    _connect_write_step,
    _default_prefix,
    _no_index,
)
from ._constants import _POLL_SECONDS, _REVOCATION_RETRY_MIN, REVOCATION_RETRY_MAX, AsyncClient, Layout, log
from ._errors import _map_errors
from ._express_scripts import _CONNECT_LOAD
from ._hashes import (
    _is_wrong_type,
    _load_touch_result,
    _load_touch_step,
    _malformed,
    _merge_step,
    _record,
    _save_steps,
    _touch_step,
)
from ._index import _REVOKED, _delete_ops, _index_flow, _list_flow, _revoke_flow, _text
from ._ops import _Batch, _check_prefix, _Flow, _Op, _Step
from ._own import AsyncMux, ReplyError
from ._own_transport import _command, _is_noscript, _raise_errors
from ._url import _async_sentinel_client, _check_client, _lean_address, _parse_url, _SentinelTarget, _split_layout

_T = TypeVar("_T")


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore` (ASGI), on ``redis.asyncio.Redis`` or its ``RedisCluster``.

    Parameters as :class:`RedisStore`. Create the client inside the event loop
    that will use it, or let :meth:`from_url` do so lazily.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        _check_client(client, want_async=True)
        self._setup(client, None, prefix, clock, layout)

    def _setup(
        self,
        client: AsyncClient | None,
        mux: AsyncMux | None,
        prefix: str | None,
        clock: Callable[[], float],
        layout: Layout,
    ) -> None:
        self._client = client
        self._mux = mux
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-redis"
        self._prefix = _check_prefix(_default_prefix(prefix, layout))
        self._clock = clock
        self._cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._owned: list[Callable[[], Any]] = []
        self._cache: _AsyncClientCache | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        client_cache: int = 0,
        **client_options: Any,
    ) -> AsyncRedisStore:
        """A store on an asyncio client of its own, built from ``url``: see :meth:`RedisStore.from_url`.

        :raises ConfigError: the URL is malformed, names no host, its scheme
            is unsupported, an option is unknown, or ``client_cache`` is not
            a non-negative int or cannot be used.

        .. versionchanged:: 0.2 ``client_cache``.
        """
        url, layout = _split_layout(url, layout)
        target = _parse_url(url)
        _check_client_cache(client_cache)
        if not isinstance(target, _SentinelTarget):
            store = cls.__new__(cls)
            mux = AsyncMux(_lean_address(target, client_options))
            store._setup(None, mux, prefix, clock, layout)
            store._owned = [mux.aclose]
            if client_cache:
                if store._connect:
                    raise ConfigError("client_cache", "needs the persession layout, not connect-redis")
                cache = store._cache = _AsyncClientCache(mux, client_cache)

                async def close_cache() -> None:
                    cache.close()

                store._owned.insert(0, close_cache)
            return store
        if client_cache:
            raise ConfigError("client_cache", "needs persession's own connections: a redis, rediss or unix URL")
        client, owned = _async_sentinel_client(target, client_options)
        store = cls(client, prefix=prefix, clock=clock, layout=layout)
        store._owned = owned
        return store

    @property
    def client(self) -> AsyncClient | None:
        """The redis-py client the store was built on, or ``None``: see :attr:`RedisStore.client`."""
        return self._client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-redis"``."""
        return self._layout

    async def _run(self, step: _Step) -> Any:
        if self._cache is not None:
            self._cache.forget(step.keys)
            try:
                return await self._run_uncached(step)
            finally:
                self._cache.forget(step.keys)
        return await self._run_uncached(step)

    async def _run_uncached(self, step: _Step) -> Any:
        if self._mux is not None:
            (reply,) = await self._mux.execute((_command(step, cached=True),))
            if _is_noscript(reply):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                (reply,) = await self._mux.execute((_command(step, cached=False),))
            return _raise_errors([reply], tolerant=False)[0]
        assert self._client is not None  # noqa: S101  (one of the two is set)
        if step.script is None:
            return await self._client.delete(*step.keys)
        try:
            return await self._client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
            return await self._client.eval(step.script.text, len(step.keys), *step.keys, *step.args)

    async def _execute(self, op: _Op, touched: tuple[str, ...] | None = None) -> Any:
        if isinstance(op, _Step):
            return await self._run(op)
        cache = self._cache
        if cache is None:
            return await self._execute_batch(op)
        cache.forget(touched)  # see RedisStore._execute
        try:
            return await self._execute_batch(op)
        finally:
            cache.forget(touched)

    async def _execute_batch(self, op: _Batch) -> Any:
        if self._mux is not None:
            return _raise_errors(await self._mux.execute(op.commands), op.tolerant)
        assert self._client is not None  # noqa: S101
        async with self._client.pipeline(transaction=False) as pipe:
            for command in op.commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=not op.tolerant)

    async def _drive(self, flow: _Flow[_T]) -> _T:
        with _map_errors:
            try:
                op = next(flow)
                while True:
                    op = flow.send(await self._execute(op))
            except StopIteration as done:
                result: _T = done.value
                return result

    async def load(self, sid: str) -> Record | None:
        """See :meth:`RedisStore.load`."""
        if self._connect:
            now = self._clock()
            with _map_errors:
                reply = await self._run(_Step(_CONNECT_LOAD, (self._prefix + sid,)))
            return _connect_load_result(self._prefix, reply, now)
        with _map_errors:
            try:
                raw = await self._hgetall(self._prefix + sid)
            except (ReplyError, ResponseError) as error:  # own connections' or redis-py's
                if not _is_wrong_type(error):
                    raise
                _malformed(self._prefix, "the key is not a hash")
                return None
        return _record(self._prefix, raw, self._clock())

    async def _hgetall(self, key: str) -> Mapping[bytes | str, bytes | str] | list[Any]:
        if self._cache is not None:
            return await self._cache.load(key)
        if self._mux is not None:
            (reply,) = _raise_errors(await self._mux.execute((("HGETALL", key),)), tolerant=False)
            return cast("list[Any]", reply)
        assert self._client is not None  # noqa: S101
        return await self._client.hgetall(key)

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`RedisStore.load_touch`."""
        now = self._clock()
        if self._connect:
            expires = _connect_idle(now, idle, absolute)
            with _map_errors:
                reply = await self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_touched(self._prefix, reply, expires, now)
        step = _load_touch_step(self._prefix, sid, idle, absolute, now, self._cluster)
        with _map_errors:
            reply = await self._run(step)
        return _load_touch_result(self._prefix, reply, now)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`RedisStore.save`."""
        steps = (_connect_save_steps if self._connect else _save_steps)(
            self._prefix, sid, record, replaces, self._clock(), self._cluster
        )
        with _map_errors:
            for step in steps:
                await self._run(step)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        """See :meth:`RedisStore.merge`."""
        now = self._clock()
        if self._connect:
            with _map_errors:
                reply = await self._run(_connect_write_step(self._prefix, sid, change, expires, now))
            return _connect_write_result(self._prefix, reply)
        step = _merge_step(self._prefix, sid, change, expires, now, self._cluster)
        with _map_errors:
            if self._cache is not None:  # the merged record comes back in the same round trip
                return bool(await self._cache.merge(self._prefix + sid, step))
            return bool(await self._run(step))

    async def touch(self, sid: str, expires: float) -> bool:
        """See :meth:`RedisStore.touch`."""
        now = self._clock()
        if self._connect:
            with _map_errors:
                reply = await self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_write_result(self._prefix, reply)
        step = _touch_step(self._prefix, sid, expires, now, self._cluster)
        with _map_errors:
            return bool(await self._run(step))

    async def delete(self, sid: str) -> None:
        """See :meth:`RedisStore.delete`."""
        with _map_errors:
            await self._execute(_delete_ops(self._prefix, sid, self._cluster), (self._prefix + sid,))

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`RedisStore.index_user`."""
        if self._connect:
            return
        await self._drive(_index_flow(self._prefix, user, sid, self._clock(), self._cluster))

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`RedisStore.user_sessions`."""
        if self._connect:
            _no_index(self._layout)
        return await self._drive(_list_flow(self._prefix, user, self._clock(), self._cluster))

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`RedisStore.revoke_user`."""
        if self._connect:
            _no_index(self._layout)
        return await self._drive(_revoke_flow(self._prefix, user, self._clock(), self._cluster))

    async def watch_revocations(self) -> AsyncIterator[str]:
        """Yield the id of every session deleted or revoked from now on, by any process, until cancelled.

        Subscribes to ``prefix + "revoked"`` on a connection of the store's own
        client (a cluster: regular pub/sub on one node, which sees every
        node's ``PUBLISH``). When the server is unreachable it logs a warning
        on ``persession`` and resubscribes, waiting up to
        :data:`REVOCATION_RETRY_MAX` seconds between tries; ids published
        meanwhile are missed. Cancelling the consumer (or ``aclose()``) closes
        the subscription. Implements :class:`~persession.stores.RevocationFeed`.
        """
        channel = self._prefix + _REVOKED
        if self._mux is not None:
            async for sid in self._watch_lean(channel):
                yield sid
            return
        client = self._client
        assert client is not None  # noqa: S101
        delay = _REVOCATION_RETRY_MIN
        while True:
            pubsub = None
            try:
                try:
                    with _map_errors:
                        if isinstance(client, redis.asyncio.cluster.RedisCluster):
                            await client.initialize()  # its pubsub needs the slot map
                        pubsub = client.pubsub()
                        await pubsub.subscribe(channel)
                    while True:
                        with _map_errors:
                            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_SECONDS)
                        delay = _REVOCATION_RETRY_MIN
                        if message is not None and message.get("type") == "message":
                            yield _text(message["data"])
                except StoreUnavailable as error:
                    log.warning("revocation feed: Redis unreachable (%s); resubscribing in %.1f s", error, delay)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in redis-py
            await asyncio.sleep(delay)
            delay = min(delay * 2, REVOCATION_RETRY_MAX)

    async def _watch_lean(self, channel: str) -> AsyncIterator[str]:
        assert self._mux is not None  # noqa: S101
        delay = _REVOCATION_RETRY_MIN
        while True:
            try:
                with _map_errors:
                    async for data in self._mux.subscribe(channel, _POLL_SECONDS):
                        delay = _REVOCATION_RETRY_MIN
                        yield _text(data)
            except StoreUnavailable as error:
                log.warning("revocation feed: Redis unreachable (%s); resubscribing in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REVOCATION_RETRY_MAX)

    async def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open."""
        owned, self._owned = self._owned, []
        with _map_errors:
            for close in owned:
                await close()
