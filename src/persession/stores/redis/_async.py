"""AsyncRedisStore: the asyncio Redis store (ASGI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from ...exceptions import StoreUnavailable
from ...records import Change, Record, SessionInfo
from .._flow import adrive
from ._cache import _check_client_cache
from ._constants import _POLL_SECONDS, _REVOCATION_RETRY_MIN, REVOCATION_RETRY_MAX, AsyncClient, Layout, log
from ._errors import _map_errors
from ._index import _REVOKED, _text
from ._layouts import _make_layout
from ._ops import _Flow
from ._redispy import _redis_py_async
from ._transport import _AsyncTransport
from ._url import _async_transport, _check_client, _parse_store_url

_T = TypeVar("_T")


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore` (ASGI), on ``redis.asyncio.Redis`` or its ``RedisCluster``.

    Parameters as :class:`RedisStore`. Create the client inside the event loop
    that will use it, or let :meth:`from_url` do so lazily. On a
    ``redis.asyncio.Redis`` the store keeps the connections it used checked
    out of the client's pool until :meth:`close` (see :doc:`/stores`): close
    the store before the client.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: AsyncClient | _AsyncTransport,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        if isinstance(client, _AsyncTransport):
            transport = client
        else:
            _check_client(client, want_async=True)
            transport = _redis_py_async(client)
        self._layout = _make_layout(layout, prefix, clock, cluster=transport.cluster)
        self._transport = transport
        self._clock = clock
        transport.preload(self._layout.scripts)

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
        target = _parse_store_url(url, layout)
        transport = _async_transport(target, client_options, _check_client_cache(client_cache))
        return cls(transport, prefix=prefix, clock=clock, layout=target.layout)

    @property
    def client(self) -> AsyncClient | None:
        """The redis-py client the store was built on, or ``None``: see :attr:`RedisStore.client`."""
        return self._transport.client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._layout.prefix

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-redis"``."""
        return self._layout.name  # type: ignore[return-value]  # one of the two

    async def _drive(self, flow: _Flow[_T]) -> _T:
        with _map_errors:
            return await adrive(self._transport.run, flow)

    async def load(self, sid: str) -> Record | None:
        """See :meth:`RedisStore.load`."""
        op, finish = self._layout.load(sid)
        with _map_errors:
            reply = await self._transport.run(op)
        return finish(reply)

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`RedisStore.load_touch`."""
        op, finish = self._layout.load_touch(sid, idle, absolute)
        with _map_errors:
            reply = await self._transport.run(op)
        return finish(reply)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`RedisStore.save`."""
        ops = self._layout.save(sid, record, replaces)
        run = self._transport.run
        with _map_errors:
            for op in ops:
                await run(op)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        """See :meth:`RedisStore.merge`."""
        op, finish = self._layout.merge(sid, change, expires)
        with _map_errors:
            reply = await self._transport.run(op)
        return finish(reply)

    async def touch(self, sid: str, expires: float) -> bool:
        """See :meth:`RedisStore.touch`."""
        op, finish = self._layout.touch(sid, expires)
        with _map_errors:
            reply = await self._transport.run(op)
        return finish(reply)

    async def delete(self, sid: str) -> None:
        """See :meth:`RedisStore.delete`."""
        op = self._layout.delete(sid)
        with _map_errors:
            await self._transport.run(op)

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`RedisStore.index_user`."""
        flow = self._layout.index_user(user, sid)
        if flow is not None:
            await self._drive(flow)

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`RedisStore.user_sessions`."""
        return await self._drive(self._layout.user_sessions(user))

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`RedisStore.revoke_user`."""
        return await self._drive(self._layout.revoke_user(user))

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
        channel = self._layout.prefix + _REVOKED
        delay = _REVOCATION_RETRY_MIN
        while True:
            try:
                with _map_errors:
                    messages = self._transport.messages(channel, _POLL_SECONDS)
                    try:
                        async for data in messages:
                            delay = _REVOCATION_RETRY_MIN
                            yield _text(data)
                    finally:
                        await messages.aclose()  # type: ignore[attr-defined]  # an async generator
            except StoreUnavailable as error:
                log.warning("revocation feed: Redis unreachable (%s); resubscribing in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REVOCATION_RETRY_MAX)

    async def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open."""
        with _map_errors:
            await self._transport.close()
