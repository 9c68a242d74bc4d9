"""The commands a layout asks a transport to run: each runs itself, on a sync or an asyncio collection.

A layout's verb is a :data:`Step` (one op and what turns its reply into the
verb's result: a plain tuple, no generator) or, when a reply decides the next
command (a compare-and-swap, a save that replaces), a :data:`Flow` that yields
ops, is sent each reply and returns the result. The transports drive both.
Plain ``__slots__`` classes, not dataclasses: one or two are built per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, TypeAlias, TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.results import DeleteResult, UpdateResult

_T = TypeVar("_T")
_Sync: TypeAlias = Collection[dict[str, Any]]
_Async: TypeAlias = AsyncCollection[dict[str, Any]]


class MongoOp(Protocol):
    """One command; it runs itself, so a transport needs no ``isinstance`` chain (typing only).

    ``aio`` returns PyMongo's own awaitable rather than being a coroutine of
    its own: one coroutine fewer per request.
    """

    def sync(self, collection: _Sync) -> Any: ...

    def aio(self, collection: _Async) -> Awaitable[Any]: ...


#: One round trip: the op, and what turns its reply into the verb's result.
Step: TypeAlias = tuple[MongoOp, Callable[[Any], _T]]
#: Dependent round trips: yields ops, is sent each reply, returns the verb's result.
Flow: TypeAlias = Generator[MongoOp, Any, _T]
Work: TypeAlias = "Step[_T] | Flow[_T]"


class FindOne:
    """``find_one``: the document, or ``None``."""

    __slots__ = ("filter", "projection")

    def __init__(self, filter: dict[str, Any], projection: dict[str, Any] | None = None) -> None:
        self.filter = filter
        self.projection = projection

    def sync(self, collection: _Sync) -> dict[str, Any] | None:
        return collection.find_one(self.filter, self.projection)

    def aio(self, collection: _Async) -> Awaitable[dict[str, Any] | None]:
        return collection.find_one(self.filter, self.projection)


class FindOneAndUpdate:
    """``findAndModify``: the document as the update left it, or ``None``."""

    __slots__ = ("filter", "update")

    def __init__(self, filter: dict[str, Any], update: list[dict[str, Any]]) -> None:
        self.filter = filter
        self.update = update

    def sync(self, collection: _Sync) -> dict[str, Any] | None:
        return collection.find_one_and_update(self.filter, self.update, return_document=ReturnDocument.AFTER)

    def aio(self, collection: _Async) -> Awaitable[dict[str, Any] | None]:
        return collection.find_one_and_update(self.filter, self.update, return_document=ReturnDocument.AFTER)


class UpdateOne:
    """``update_one``: its result (see :func:`matched`)."""

    __slots__ = ("filter", "update", "upsert")

    def __init__(self, filter: dict[str, Any], update: dict[str, Any], upsert: bool = False) -> None:
        self.filter = filter
        self.update = update
        self.upsert = upsert

    def sync(self, collection: _Sync) -> UpdateResult:
        return collection.update_one(self.filter, self.update, upsert=self.upsert)

    def aio(self, collection: _Async) -> Awaitable[UpdateResult]:
        return collection.update_one(self.filter, self.update, upsert=self.upsert)


class DeleteOne:
    """``delete_one`` by id."""

    __slots__ = ("sid",)

    def __init__(self, sid: str) -> None:
        self.sid = sid

    def sync(self, collection: _Sync) -> DeleteResult:
        return collection.delete_one({"_id": self.sid})

    def aio(self, collection: _Async) -> Awaitable[DeleteResult]:
        return collection.delete_one({"_id": self.sid})


class FindMany:
    """``find``: every matching document, projected."""

    __slots__ = ("filter", "projection")

    def __init__(self, filter: dict[str, Any], projection: dict[str, Any]) -> None:
        self.filter = filter
        self.projection = projection

    def sync(self, collection: _Sync) -> list[dict[str, Any]]:
        return list(collection.find(self.filter, self.projection))

    def aio(self, collection: _Async) -> Awaitable[list[dict[str, Any]]]:
        return collection.find(self.filter, self.projection).to_list(None)


class DeleteMany:
    """``delete_many``."""

    __slots__ = ("filter",)

    def __init__(self, filter: dict[str, Any]) -> None:
        self.filter = filter

    def sync(self, collection: _Sync) -> DeleteResult:
        return collection.delete_many(self.filter)

    def aio(self, collection: _Async) -> Awaitable[DeleteResult]:
        return collection.delete_many(self.filter)


class Pause:
    """No command: a compare-and-swap's backoff, slept by the thread or by the event loop."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def sync(self, collection: _Sync) -> None:
        time.sleep(self.seconds)

    def aio(self, collection: _Async) -> Awaitable[None]:
        return asyncio.sleep(self.seconds)


def nothing(reply: object) -> None:
    """The finish of a verb that returns nothing."""


def matched(result: UpdateResult) -> bool:
    """The finish of an :class:`UpdateOne`: whether a document matched."""
    return result.matched_count == 1


def upsert(sid: str, update: dict[str, Any], replaces: str | None) -> Work[None]:
    """``save``: write the document whole, then delete ``replaces`` (a second op only when there is one)."""
    write = UpdateOne({"_id": sid}, update, upsert=True)
    if replaces is None or replaces == sid:
        return (write, nothing)
    return _replace(write, replaces)


def _replace(write: UpdateOne, replaces: str) -> Flow[None]:
    yield write
    yield DeleteOne(replaces)
