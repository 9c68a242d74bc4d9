"""The asyncio MongoDB store (ASGI), on PyMongo's native async client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from ...exceptions import ConfigError
from ...records import Change, Record, SessionInfo
from .._express import choose_layout
from ._constants import Layout
from ._layouts import LAYOUTS, MongoLayout
from ._transport import AsyncMongoTransport
from ._url import parse_url


class AsyncMongoStore:
    """The asyncio twin of :class:`MongoStore` (ASGI), on PyMongo's native async client.

    :param collection: an :class:`~pymongo.asynchronous.collection.AsyncCollection`
        from an :class:`~pymongo.AsyncMongoClient`; never closed by the store.
    :param clock: returns the current Unix time; default :func:`time.time`.

    An ``AsyncMongoClient`` belongs to the event loop it first runs on, so build
    the store inside the application's loop (or with :meth:`from_url`, which
    connects lazily). Semantics as :class:`MongoStore`.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        collection: AsyncCollection[Any] | AsyncMongoTransport,
        *,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        if not isinstance(collection, (AsyncCollection, AsyncMongoTransport)):
            raise ConfigError(
                "collection",
                "AsyncMongoStore needs an AsyncMongoClient collection; for a MongoClient collection use MongoStore",
            )
        chosen = choose_layout(layout, LAYOUTS)
        if isinstance(collection, AsyncMongoTransport):
            transport = collection
        else:
            transport = AsyncMongoTransport(collection, LAYOUTS[chosen].indexes)
        self._transport = transport
        self._layout: MongoLayout = LAYOUTS[chosen](clock, transport.namespace)
        # Bound once: the verbs below are a layout's step and one run, nothing else.
        self._run = transport.run
        self._drive = transport.drive

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str | None = None,
        collection: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        **client_kwargs: Any,
    ) -> AsyncMongoStore:
        """A store on its own :class:`~pymongo.AsyncMongoClient`, closed by :meth:`close`.

        Parameters and defaults as :meth:`MongoStore.from_url`.

        :raises ConfigError: naming ``url``.
        """
        target = parse_url(url, database, collection, layout, client_kwargs)
        return cls(AsyncMongoTransport.open(target, LAYOUTS[target.layout].indexes), clock=clock, layout=target.layout)

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The collection the documents live in."""
        return self._transport.collection

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-mongo"``."""
        return self._layout.name

    async def load(self, sid: str) -> Record | None:
        op, finish = self._layout.load(sid)
        return finish(await self._run(op))

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`MongoStore.load_touch`."""
        work = self._layout.load_touch(sid, idle, absolute)
        if type(work) is tuple:  # a step (op, finish), run inline: no second coroutine per request
            return work[1](await self._run(work[0]))
        return await self._drive(work)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`MongoStore.save`: the new document first, then the old one deleted."""
        work = self._layout.save(sid, record, replaces)
        if type(work) is tuple:
            return work[1](await self._run(work[0]))
        return await self._drive(work)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        work = self._layout.merge(sid, change, expires)
        if type(work) is tuple:
            return work[1](await self._run(work[0]))
        return await self._drive(work)

    async def touch(self, sid: str, expires: float) -> bool:
        work = self._layout.touch(sid, expires)
        if type(work) is tuple:
            return work[1](await self._run(work[0]))
        return await self._drive(work)

    async def delete(self, sid: str) -> None:
        op, finish = self._layout.delete(sid)
        finish(await self._run(op))

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`MongoStore.index_user`."""
        step = self._layout.index_user(user, sid)
        if step is not None:
            op, finish = step
            finish(await self._run(op))

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`MongoStore.user_sessions`."""
        op, finish = self._layout.user_sessions(user)
        return finish(await self._run(op))

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`MongoStore.revoke_user`."""
        return await self._drive(self._layout.revoke_user(user))

    async def close(self) -> None:
        """Close the client if :meth:`from_url` created it; a caller's client is left open."""
        await self._transport.close()
