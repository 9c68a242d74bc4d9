"""Where the MongoDB layouts' ops run: one collection, its indexes ensured once, its client owned or not."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel, MongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError

from ...exceptions import ConfigError
from .._flow import adrive, drive
from ._constants import _CODEC_OPTIONS
from ._documents import _index_conflict
from ._errors import _map_errors
from ._ops import MongoOp, Work
from ._url import MongoTarget

_T = TypeVar("_T")


def _field(model: IndexModel) -> str:
    return str(next(iter(model.document["key"])))


class MongoTransport:
    """Runs ops on a :class:`~pymongo.collection.Collection`; built by ``MongoStore`` or its ``from_url``.

    The indexes are ensured on the first op (an existing index on the same
    field is used as it is). ``source`` is the parsed URL when ``from_url``
    made the client: then :meth:`close` closes it and :meth:`twin` can build
    the asyncio transport on the same URL.
    """

    __slots__ = ("_index_lock", "_indexed", "_indexes", "_source", "client", "collection", "namespace")

    #: The collection the ops run on, with the store's codec options.
    collection: Collection[dict[str, Any]]
    #: ``database.collection``, for log lines (never a session id).
    namespace: str
    #: The client :meth:`open` made (closed by :meth:`close`), else ``None``.
    client: MongoClient[dict[str, Any]] | None

    def __init__(
        self,
        collection: Collection[Any],
        indexes: Sequence[IndexModel],
        *,
        client: MongoClient[dict[str, Any]] | None = None,
        source: MongoTarget | None = None,
    ) -> None:
        self.collection = collection.with_options(codec_options=_CODEC_OPTIONS)
        self.namespace = collection.full_name
        self.client = client
        self._source = source
        self._indexes = list(indexes)
        self._indexed = False
        self._index_lock = threading.Lock()

    @classmethod
    def open(cls, target: MongoTarget, indexes: Sequence[IndexModel]) -> MongoTransport:
        """A transport on a client of its own, made from ``target``; :class:`ConfigError` naming ``url``."""
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(target.url, **target.options)
        except (PyMongoError, ValueError, TypeError) as error:
            raise ConfigError("url", f"PyMongo refused the MongoDB URL or options: {error}") from error
        try:
            return cls(client[target.database][target.collection], indexes, client=client, source=target)
        except PyMongoError as error:  # InvalidName
            client.close()
            raise ConfigError("url", f"bad MongoDB database or collection name: {error}") from error

    def run(self, op: MongoOp) -> Any:
        if not self._indexed:
            self._ensure_indexes()
        with _map_errors:
            return op.sync(self.collection)

    def drive(self, work: Work[_T]) -> _T:
        """Run a layout's verb: a step's one op, or a flow's ops one by one."""
        if type(work) is tuple:
            op, finish = work
            return finish(self.run(op))
        flow: Any = work
        return drive(self.run, flow)  # type: ignore[no-any-return]

    def _ensure_indexes(self) -> None:
        with self._index_lock:
            if self._indexed:
                return
            with _map_errors:
                try:
                    self.collection.create_indexes(self._indexes)
                except OperationFailure as error:
                    if not _index_conflict(error):
                        raise
                    for model in self._indexes:  # one of them exists already: the others one by one
                        try:
                            self.collection.create_indexes([model])
                        except OperationFailure as again:
                            if not _index_conflict(again, _field(model)):
                                raise
            self._indexed = True

    def twin(self) -> AsyncMongoTransport:
        """The asyncio transport on the same URL, database and collection, on a client of its own."""
        if self._source is None:
            raise ConfigError(
                "store",
                "to_async() needs a store built with MongoStore.from_url(); otherwise construct "
                "AsyncMongoStore on a collection of an AsyncMongoClient",
            )
        return AsyncMongoTransport.open(self._source, self._indexes)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class AsyncMongoTransport:
    """The asyncio twin of :class:`MongoTransport`, on an :class:`~pymongo.AsyncMongoClient`'s collection."""

    __slots__ = ("_index_lock", "_indexed", "_indexes", "client", "collection", "namespace")

    collection: AsyncCollection[dict[str, Any]]
    namespace: str
    client: AsyncMongoClient[dict[str, Any]] | None

    def __init__(
        self,
        collection: AsyncCollection[Any],
        indexes: Sequence[IndexModel],
        *,
        client: AsyncMongoClient[dict[str, Any]] | None = None,
    ) -> None:
        self.collection = collection.with_options(codec_options=_CODEC_OPTIONS)
        self.namespace = collection.full_name
        self.client = client
        self._indexes = list(indexes)
        self._indexed = False
        self._index_lock = asyncio.Lock()  # binds to a loop only when first contended

    @classmethod
    def open(cls, target: MongoTarget, indexes: Sequence[IndexModel]) -> AsyncMongoTransport:
        """See :meth:`MongoTransport.open`."""
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(target.url, **target.options)
        except (PyMongoError, ValueError, TypeError) as error:
            raise ConfigError("url", f"PyMongo refused the MongoDB URL or options: {error}") from error
        try:
            return cls(client[target.database][target.collection], indexes, client=client)
        except PyMongoError as error:  # InvalidName; the client has not connected yet
            raise ConfigError("url", f"bad MongoDB database or collection name: {error}") from error

    async def run(self, op: MongoOp) -> Any:
        if not self._indexed:
            await self._ensure_indexes()
        with _map_errors:
            return await op.aio(self.collection)

    async def drive(self, work: Work[_T]) -> _T:
        """See :meth:`MongoTransport.drive`."""
        if type(work) is tuple:
            op, finish = work
            return finish(await self.run(op))
        flow: Any = work
        return await adrive(self.run, flow)

    async def _ensure_indexes(self) -> None:
        async with self._index_lock:
            if self._indexed:
                return
            with _map_errors:
                try:
                    await self.collection.create_indexes(self._indexes)
                except OperationFailure as error:
                    if not _index_conflict(error):
                        raise
                    for model in self._indexes:  # one of them exists already: the others one by one
                        try:
                            await self.collection.create_indexes([model])
                        except OperationFailure as again:
                            if not _index_conflict(again, _field(model)):
                                raise
            self._indexed = True

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
