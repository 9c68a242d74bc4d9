"""The synchronous MongoDB store (WSGI)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError

from ...codecs import encode_express
from ...exceptions import ConfigError
from ...records import Change, Record, SessionInfo
from ._async import AsyncMongoStore
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
from ._url import _client_options, _split_url, _Target, _url_layout


class MongoStore:
    """A synchronous MongoDB session store (WSGI).

    :param collection: a PyMongo :class:`~pymongo.collection.Collection` the store
        owns the documents of (one collection per application). The store reads
        and writes through it with its own codec options (plain dicts, aware
        UTC dates), and never closes its client.
    :param clock: returns the current Unix time; default :func:`time.time`.

    The TTL index on ``expires`` is created on first use (an existing index on
    ``expires`` is used as it is). ``save(..., replaces=old)`` writes the new
    document and then deletes ``old``: two writes, not a transaction, so a
    crash between them leaves the old session live until it expires (see
    :meth:`save`).

    .. versionadded:: 0.1
    """

    def __init__(
        self, collection: Collection[Any], *, clock: Callable[[], float] = time.time, layout: Layout = "persession"
    ) -> None:
        if not isinstance(collection, Collection):
            raise ConfigError(
                "collection",
                "MongoStore needs a pymongo Collection; for an AsyncMongoClient collection use AsyncMongoStore",
            )
        self._collection: Collection[dict[str, Any]] = collection.with_options(codec_options=_CODEC_OPTIONS)
        self._clock = clock
        self._namespace = collection.full_name
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-mongo"
        self._indexes = _CONNECT_INDEXES if self._connect else _INDEXES
        self._indexed = False
        self._index_lock = threading.Lock()
        self._client: MongoClient[dict[str, Any]] | None = None
        self._target: _Target | None = None

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
    ) -> MongoStore:
        """A store on its own :class:`~pymongo.MongoClient`, closed by :meth:`close`.

        :param url: ``mongodb://[user:pass@]host[:port][,host...]/dbname[?options]``
            or ``mongodb+srv://``; the query parameter ``collection`` is
            persession's, the rest go to PyMongo.
        :param database: the database, when the URL path names none (this wins
            over the path when both do).
        :param collection: the collection; default the URL's ``collection``
            parameter, else ``"sessions"``.
        :param clock: returns the current Unix time.
        :param layout: as for the constructor; also the URL's ``layout`` query
            parameter (``mongodb://db/app?layout=connect-mongo``).
        :param client_kwargs: more :class:`~pymongo.MongoClient` options. Unless
            the URL or these set them, ``serverSelectionTimeoutMS``,
            ``connectTimeoutMS`` and ``socketTimeoutMS`` are 2000 (see the
            ``DEFAULT_*_MS`` constants), and ``connect=False``.
        :raises ConfigError: naming ``url``: not a MongoDB URL, no host, no database,
            or options PyMongo refuses.
        """
        chosen_layout = _url_layout(url, layout)
        target = _Target(url, database, collection, dict(client_kwargs), chosen_layout)
        driver_url, db_name, coll_name = _split_url(url, database, collection)
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(driver_url, **_client_options(driver_url, client_kwargs))
        except (PyMongoError, ValueError, TypeError) as error:
            raise ConfigError("url", f"PyMongo refused the MongoDB URL or options: {error}") from error
        try:
            store = cls(client[db_name][coll_name], clock=clock, layout=chosen_layout)
        except PyMongoError as error:  # InvalidName
            client.close()
            raise ConfigError("url", f"bad MongoDB database or collection name: {error}") from error
        store._client = client
        store._target = target
        return store

    @property
    def collection(self) -> Collection[dict[str, Any]]:
        """The collection the documents live in."""
        return self._collection

    def _ready(self) -> Collection[dict[str, Any]]:
        """The collection, with the TTL index ensured once per store object."""
        if not self._indexed:
            with self._index_lock:
                if not self._indexed:
                    with _map_errors():
                        try:
                            self._collection.create_indexes(list(self._indexes))
                        except OperationFailure as error:
                            if not _index_conflict(error):
                                raise
                            for model in self._indexes:  # one of them exists already: the others one by one
                                field = next(iter(model.document["key"]))
                                try:
                                    self._collection.create_indexes([model])
                                except OperationFailure as again:
                                    if not _index_conflict(again, field):
                                        raise
                    self._indexed = True
        return self._collection

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-mongo"``."""
        return self._layout

    def load(self, sid: str) -> Record | None:
        collection = self._ready()
        now = self._clock()
        if self._connect:
            with _map_errors():
                found = collection.find_one(_connect_live(sid, now))
            return _connect_result(found, now, self._namespace)
        with _map_errors():
            document = collection.find_one(_load_filter(sid, now))
        return _load_result(document, now, self._namespace)

    def _connect_write(self, sid: str, change: Change, expires: float, now: float) -> str | None:
        """Compare and swap the ``session`` text; the new text, or ``None`` when the session is gone."""
        collection = self._ready()
        with _map_errors():
            for attempt in range(CAS_ATTEMPTS):
                if attempt:
                    time.sleep(_backoff(attempt))
                document = collection.find_one(_connect_live(sid, now), _CAS_FIELDS)
                if document is None or _connect_dead(document, now, self._namespace):
                    return None
                text = _connect_merged(document, change, expires, self._namespace)
                if text is None:
                    return None
                swapped = collection.update_one(
                    _connect_swap(sid, document["session"], now), _connect_set(text, expires)
                )
                if swapped.matched_count == 1:
                    return text
        _lost_race()

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry: one ``findAndModify`` with a pipeline update.

        The server computes the capped expiry from the stored ``created``
        (MongoDB 4.2+). See :class:`~persession.stores.RollingLoad`.
        """
        now = self._clock()
        if self._connect:  # a compare and swap (see the module docs)
            expires = _connect_idle(now, idle, absolute)
            text = self._connect_write(sid, _NO_CHANGE, expires, now)
            return _connect_touched(text, expires, now, self._namespace)
        collection = self._ready()
        with _map_errors():
            document = collection.find_one_and_update(
                _load_filter(sid, now), _load_touch_update(now, idle, absolute), return_document=ReturnDocument.AFTER
            )
        return _load_result(document, now, self._namespace)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write ``record`` whole, then delete ``replaces``.

        Two writes, not a transaction: a transaction needs a replica set and
        costs a third round trip, and the only state a crash between the
        writes can leave is the *old* session still live until it expires —
        with its old data, never the new record's — which is what it was
        before the regenerate began.
        """
        update = (
            _connect_set(encode_express(record.data, record.expires, self._clock()), record.expires)
            if self._connect
            else _save_update(_document(sid, record))  # refuse bad data before writing anything
        )
        collection = self._ready()
        with _map_errors():
            collection.update_one({"_id": sid}, update, upsert=True)
            if replaces is not None and replaces != sid:
                collection.delete_one({"_id": replaces})

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        now = self._clock()
        if self._connect:  # a compare and swap (see the module docs)
            return self._connect_write(sid, change, expires, now) is not None
        update = _merge_update(change, now, expires)
        collection = self._ready()
        with _map_errors():
            result = collection.update_one(_live(sid, now), update)
        return result.matched_count == 1

    def touch(self, sid: str, expires: float) -> bool:
        now = self._clock()
        if self._connect:  # cookie.expires in the text moves with expires
            return self._connect_write(sid, _NO_CHANGE, expires, now) is not None
        collection = self._ready()
        with _map_errors():
            result = collection.update_one(_live(sid, now), _touch_update(now, expires))
        return result.matched_count == 1

    def delete(self, sid: str) -> None:
        collection = self._ready()
        with _map_errors():
            collection.delete_one({"_id": sid})

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Set ``user`` on the live session's document: one ``update`` (see the module docs).

        The ``connect-mongo`` layout keeps no index: this does nothing.
        """
        if self._connect:
            return
        now = self._clock()
        collection = self._ready()
        with _map_errors():
            collection.update_one(_live(sid, now), {"$set": {"user": user}})

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first: one ``find`` on the ``user`` index.

        :raises ConfigError: the ``connect-mongo`` layout keeps no index.
        """
        if self._connect:
            _no_index()
        now = self._clock()
        collection = self._ready()
        with _map_errors():
            documents = list(collection.find(_user_filter(user, now), _INFO_FIELDS))
        return _infos(documents, now, self._namespace)

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` (a ``find``, then one ``delete_many``); return the live ids.

        :raises ConfigError: the ``connect-mongo`` layout keeps no index.
        """
        if self._connect:
            _no_index()
        now = self._clock()
        collection = self._ready()
        with _map_errors():
            documents = list(collection.find({"user": user}, {"_id": 1, "expires_ts": 1}))
            collection.delete_many({"user": user})
        return _revoked(documents, now)

    def close(self) -> None:
        """Close the client if :meth:`from_url` created it; a caller's client is left open."""
        if self._client is not None:
            self._client.close()

    def to_async(self) -> AsyncMongoStore:
        """An :class:`AsyncMongoStore` on the same URL, database and collection (its own client).

        :raises ConfigError: this store was not built by :meth:`from_url`.
        """
        target = self._target
        if target is None:
            raise ConfigError(
                "store",
                "to_async() needs a store built with MongoStore.from_url(); otherwise construct "
                "AsyncMongoStore on a collection of an AsyncMongoClient",
            )
        return AsyncMongoStore.from_url(
            target.url,
            target.database,
            target.collection,
            clock=self._clock,
            layout=target.layout,
            **target.client_kwargs,
        )
