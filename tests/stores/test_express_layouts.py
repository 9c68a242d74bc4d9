"""The connect-redis and connect-mongo layouts: what is particular to each backend, on real servers.

What express-session and its stores read is checked end to end against Node in
``tests/test_express_interop.py``. What both layouts do (the stored shapes,
merge order, the merges racing, the no-resurrection guard, records without a
store expiry, malformed records) is the contract on every express kind and
transport: ``test_contract_express.py``; what they share with every store, the
rest of ``test_contract*.py``. This file keeps the options (prefixes, layout
names), connect-mongo's TTL index, and its bounded compare-and-swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import pytest
import redis
from pymongo import monitoring

from _mongo import make_mongo_store, mongo_server_fixture, replace_collection  # noqa: F401  (the fixture)
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _stores import MongoExpress, adapt
from persession import Change, ConfigError, Record, StoreError
from persession.codecs import COOKIE
from persession.stores import store_from_url
from persession.stores.mongo import CAS_ATTEMPTS, AsyncMongoStore, MongoStore
from persession.stores.redis import RedisStore

pytestmark = [pytest.mark.server, pytest.mark.anyio]

SID = "abcdefghijklmnopqrstuvwxyz012345"
COOKIE_OBJECT = {"originalMaxAge": 3_600_000, "expires": None, "secure": False, "httpOnly": True, "path": "/"}


def record(data: dict[str, Any], ttl: float = 60) -> Record:
    now = time.time()
    return Record(data, created=now, accessed=now, expires=now + ttl)


def test_redis_layout_defaults_to_connect_redis_prefix(redis_server: RedisServer) -> None:
    """The connect-redis layout's default prefix is connect-redis' 'sess:'; the URL may name the layout."""
    store = store_from_url(f"{redis_server.url}?layout=connect-redis")
    try:
        assert isinstance(store, RedisStore)
        assert (store.layout, store.prefix) == ("connect-redis", "sess:")
        twin = store.to_async()
        assert (twin.layout, twin.prefix) == ("connect-redis", "sess:")
    finally:
        store.close()
    assert RedisStore(redis.Redis()).prefix == "persession:"


def test_layout_options_are_validated(redis_server: RedisServer, mongo_server: Any) -> None:
    """An unknown layout, or a URL and a keyword that disagree, raise ConfigError naming 'layout'."""
    with pytest.raises(ConfigError, match="layout"):
        RedisStore(redis.Redis(), layout="connect-mongo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="layout"):
        store_from_url(f"{redis_server.url}?layout=connect-redis", layout="persession")
    with pytest.raises(ConfigError, match="layout"):
        store_from_url(f"{mongo_server.url.rstrip('/')}/db?layout=connect-redis")


class _CreateIndexes(monitoring.CommandListener):
    """The index documents of every createIndexes command a client sends, as ordered item lists."""

    def __init__(self) -> None:
        self.sent: list[list[tuple[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "createIndexes":
            self.sent += [[(k, dict(v) if k == "key" else v) for k, v in i.items()] for i in event.command["indexes"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


#: connect-mongo's createIndex({expires: 1}, {background: true, expireAfterSeconds: 0}) as the Node
#: driver sends it (checked against the real one in tests/test_express_interop.py).
CONNECT_MONGO_INDEX = [("background", True), ("expireAfterSeconds", 0), ("name", "expires_1"), ("key", {"expires": 1})]


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_mongo_layout_creates_connect_mongos_ttl_index(mongo_server: Any, flavour: str) -> None:
    """The connect-mongo layout sends connect-mongo's TTL index document: its options, in its order, nothing else."""
    from pymongo import MongoClient

    listener = _CreateIndexes()
    database = f"layout_{uuid.uuid4().hex[:12]}"
    url = f"{mongo_server.url.rstrip('/')}/{database}?layout=connect-mongo"
    store: Any = (MongoStore if flavour == "sync" else AsyncMongoStore).from_url(url, event_listeners=[listener])
    raw: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url, tz_aware=True)
    try:
        await adapt(store).save(SID, record({COOKIE: dict(COOKIE_OBJECT)}))
        assert listener.sent == [CONNECT_MONGO_INDEX]
        collection = raw[database]["sessions"]
        indexes = {index["name"]: index for index in collection.list_indexes()}
        assert set(indexes) == {"_id_", "expires_1"}
        spec = indexes["expires_1"]
        assert (spec["key"], spec["expireAfterSeconds"], spec["background"]) == ({"expires": 1}, 0, True)
        assert set(collection.find_one({"_id": SID}) or ()) == {"_id", "session", "expires"}
    finally:
        result = store.close()
        if asyncio.iscoroutine(result):
            await result
        raw.drop_database(database)
        raw.close()


class _AlwaysRaced:
    """A collection whose compare-and-swap never matches: another writer always got there first."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def update_one(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1

        class _Result:
            matched_count = 0

        return _Result()


async def test_mongo_merge_gives_up_after_bounded_retries(mongo_server: Any) -> None:
    """A merge that loses the compare-and-swap CAS_ATTEMPTS times raises StoreError instead of looping."""
    async with make_mongo_store("sync", "layout", layout="connect-mongo") as store:
        with contextlib.closing(MongoExpress(mongo_server.url, store)) as raw:
            raw.plant(SID, json.dumps({COOKIE: COOKIE_OBJECT}))
        raced = replace_collection(store, _AlwaysRaced)
        with pytest.raises(StoreError, match="merges in a row"):
            store.merge(SID, Change(set={"a": 1}), time.time() + 60)
        assert raced.attempts == CAS_ATTEMPTS
