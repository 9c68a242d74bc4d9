"""The asyncio MongoDB store (ASGI), on PyMongo's native async client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from ...codecs import encode_express
from ...exceptions import ConfigError
from ...records import Change, Record, SessionInfo
from ._connect_mongo import (
    _CAS_FIELDS,
    _CONNECT_INDEXES,
    _NO_CHANGE,
    _backoff,
    _check_layout,
    _connect_dead,
    _connect_idle,
    _connect_live,
    _connect_merged,
    _connect_result,
    _connect_set,
    _connect_swap,
    _connect_touched,
    _lost_race,
    _no_index,
)
from ._constants import _CODEC_OPTIONS, CAS_ATTEMPTS, Layout
from ._documents import (
    _INDEXES,
    _INFO_FIELDS,
    _document,
    _index_conflict,
    _infos,
    _live,
    _load_filter,
    _load_result,
    _load_touch_update,
    _merge_update,
    _revoked,
    _save_update,
    _touch_update,
    _user_filter,
)
from ._errors import _map_errors
from ._url import _client_options, _split_url, _url_layout


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
        self, collection: AsyncCollection[Any], *, clock: Callable[[], float] = time.time, layout: Layout = "persession"
    ) -> None:
        if not isinstance(collection, AsyncCollection):
            raise ConfigError(
                "collection",
                "AsyncMongoStore needs an AsyncMongoClient collection; for a MongoClient collection use MongoStore",
            )
        self._collection: AsyncCollection[dict[str, Any]] = collection.with_options(codec_options=_CODEC_OPTIONS)
        self._clock = clock
        self._namespace = collection.full_name
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-mongo"
        self._indexes = _CONNECT_INDEXES if self._connect else _INDEXES
        self._indexed = False
        self._index_lock = asyncio.Lock()  # binds to a loop only when first contended
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

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
        chosen_layout = _url_layout(url, layout)
        driver_url, db_name, coll_name = _split_url(url, database, collection)
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                driver_url, **_client_options(driver_url, client_kwargs)
            )
        except (PyMongoError, ValueError, TypeError) as error:
            raise ConfigError("url", f"PyMongo refused the MongoDB URL or options: {error}") from error
        try:
            store = cls(client[db_name][coll_name], clock=clock, layout=chosen_layout)
        except PyMongoError as error:  # InvalidName; the client has not connected yet
            raise ConfigError("url", f"bad MongoDB database or collection name: {error}") from error
        store._client = client
        return store

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The collection the documents live in."""
        return self._collection

    async def _ready(self) -> AsyncCollection[dict[str, Any]]:
        """The collection, with the TTL index ensured once per store object."""
        if not self._indexed:
            async with self._index_lock:
                if not self._indexed:
                    with _map_errors():
                        try:
                            await self._collection.create_indexes(list(self._indexes))
                        except OperationFailure as error:
                            if not _index_conflict(error):
                                raise
                            for model in self._indexes:  # one of them exists already: the others one by one
                                field = next(iter(model.document["key"]))
                                try:
                                    await self._collection.create_indexes([model])
                                except OperationFailure as again:
                                    if not _index_conflict(again, field):
                                        raise
                    self._indexed = True
        return self._collection

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-mongo"``."""
        return self._layout

    async def load(self, sid: str) -> Record | None:
        collection = await self._ready()
        now = self._clock()
        if self._connect:
            with _map_errors():
                found = await collection.find_one(_connect_live(sid, now))
            return _connect_result(found, now, self._namespace)
        with _map_errors():
            document = await collection.find_one(_load_filter(sid, now))
        return _load_result(document, now, self._namespace)

    async def _connect_write(self, sid: str, change: Change, expires: float, now: float) -> str | None:
        """See :meth:`MongoStore._connect_write`."""
        collection = await self._ready()
        with _map_errors():
            for attempt in range(CAS_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(_backoff(attempt))
                document = await collection.find_one(_connect_live(sid, now), _CAS_FIELDS)
                if document is None or _connect_dead(document, now, self._namespace):
                    return None
                text = _connect_merged(document, change, expires, self._namespace)
                if text is None:
                    return None
                swapped = await collection.update_one(
                    _connect_swap(sid, document["session"], now), _connect_set(text, expires)
                )
                if swapped.matched_count == 1:
                    return text
        _lost_race()

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`MongoStore.load_touch`."""
        now = self._clock()
        if self._connect:
            expires = _connect_idle(now, idle, absolute)
            text = await self._connect_write(sid, _NO_CHANGE, expires, now)
            return _connect_touched(text, expires, now, self._namespace)
        collection = await self._ready()
        with _map_errors():
            document = await collection.find_one_and_update(
                _load_filter(sid, now), _load_touch_update(now, idle, absolute), return_document=ReturnDocument.AFTER
            )
        return _load_result(document, now, self._namespace)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`MongoStore.save`: the new document first, then the old one deleted."""
        update = (
            _connect_set(encode_express(record.data, record.expires, self._clock()), record.expires)
            if self._connect
            else _save_update(_document(sid, record))
        )
        collection = await self._ready()
        with _map_errors():
            await collection.update_one({"_id": sid}, update, upsert=True)
            if replaces is not None and replaces != sid:
                await collection.delete_one({"_id": replaces})

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        now = self._clock()
        if self._connect:
            return await self._connect_write(sid, change, expires, now) is not None
        update = _merge_update(change, now, expires)
        collection = await self._ready()
        with _map_errors():
            result = await collection.update_one(_live(sid, now), update)
        return result.matched_count == 1

    async def touch(self, sid: str, expires: float) -> bool:
        now = self._clock()
        if self._connect:
            return await self._connect_write(sid, _NO_CHANGE, expires, now) is not None
        collection = await self._ready()
        with _map_errors():
            result = await collection.update_one(_live(sid, now), _touch_update(now, expires))
        return result.matched_count == 1

    async def delete(self, sid: str) -> None:
        collection = await self._ready()
        with _map_errors():
            await collection.delete_one({"_id": sid})

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`MongoStore.index_user`."""
        if self._connect:
            return
        now = self._clock()
        collection = await self._ready()
        with _map_errors():
            await collection.update_one(_live(sid, now), {"$set": {"user": user}})

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`MongoStore.user_sessions`."""
        if self._connect:
            _no_index()
        now = self._clock()
        collection = await self._ready()
        with _map_errors():
            documents = await collection.find(_user_filter(user, now), _INFO_FIELDS).to_list(None)
        return _infos(documents, now, self._namespace)

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`MongoStore.revoke_user`."""
        if self._connect:
            _no_index()
        now = self._clock()
        collection = await self._ready()
        with _map_errors():
            documents = await collection.find({"user": user}, {"_id": 1, "expires_ts": 1}).to_list(None)
            await collection.delete_many({"user": user})
        return _revoked(documents, now)

    async def close(self) -> None:
        """Close the client if :meth:`from_url` created it; a caller's client is left open."""
        if self._client is not None:
            await self._client.close()
