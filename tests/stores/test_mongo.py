"""MongoDB-only behaviour of MongoStore and AsyncMongoStore, against a real server (see ``tests/_mongo.py``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from bson import Binary, ObjectId
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, OperationFailure

from _mongo import ExternalMongoServer, Flavour, MongoServer, make_mongo_store, mongo_server_fixture  # noqa: F401
from _stores import HOUR, CommandCounter, live, new_sid
from persession import ConfigError, NotSerializable, StoreError, StoreUnavailable
from persession.records import Change, Record
from persession.stores import store_from_url
from persession.stores.mongo import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    DEFAULT_SOCKET_TIMEOUT_MS,
    AsyncMongoStore,
    MongoStore,
    escape_key,
    unescape_key,
)
from persession.stores.mongo._errors import _map_errors

FLAVOURS = [pytest.param("sync", id="sync"), pytest.param("async", id="async")]
needs_server = [pytest.mark.anyio, pytest.mark.server]

AnyMongoStore = MongoStore | AsyncMongoStore
AnyServer = MongoServer | ExternalMongoServer


async def run(result: Any) -> Any:
    """Await ``result`` if the store is the async flavour; the same test body drives both."""
    if inspect.isawaitable(result):
        return await result
    return result


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """Each test runs once with MongoStore and once with AsyncMongoStore."""
    return cast(Flavour, request.param)


@pytest.fixture
async def store(
    flavour: Flavour, mongo_server: AnyServer, request: pytest.FixtureRequest
) -> AsyncIterator[AnyMongoStore]:
    """A store of the flavour on a fresh database, dropped after the test."""
    async with make_mongo_store(flavour, request.node.name) as opened:
        yield opened


@pytest.fixture
def raw(mongo_server: AnyServer) -> Iterator[MongoClient[dict[str, Any]]]:
    """A plain synchronous client for looking at and planting documents behind the store's back."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


def raw_collection(raw: MongoClient[dict[str, Any]], store: AnyMongoStore) -> Any:
    """The store's collection, seen through ``raw``."""
    return raw[store.collection.database.name][store.collection.name]


# --- escaping (no server) ------------------------------------------------------------------------

AWKWARD = ["a.b", "$where", "$", "%", "%25", "x%2Ey", ".", "", "nul\x00byte", "plain", "ключ.$%"]


@pytest.mark.parametrize("key", AWKWARD)
def test_escape_key_round_trips_and_is_a_safe_field_name(key: str) -> None:
    """Every key escapes to a non-empty field name without '.', '$' or NUL and unescapes to itself."""
    name = escape_key(key)
    assert name
    assert not {".", "$", "\x00"} & set(name)
    assert unescape_key(name) == key


@pytest.mark.parametrize("name", ["a.b", "$x", "%zz", "50%", "", "a\x00b"])
def test_unescape_key_refuses_names_escape_key_never_makes(name: str) -> None:
    """A stored field name that escape_key could not have produced is refused."""
    with pytest.raises(ValueError, match="field name"):
        unescape_key(name)


def test_escaping_is_injective() -> None:
    """Distinct keys never share a field name, so $set and $unset address exactly one key."""
    keys = [*AWKWARD, "%2E", ".%", "%.", "%%", "$%24"]
    assert len({escape_key(key) for key in keys}) == len(keys)


# --- error mapping (no server) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(AutoReconnect("connection reset"), StoreUnavailable, id="AutoReconnect"),
        pytest.param(NetworkTimeout("timed out"), StoreUnavailable, id="NetworkTimeout"),
        pytest.param(ConnectionFailure("refused"), StoreUnavailable, id="ConnectionFailure"),
        pytest.param(OperationFailure("E11000 dup key: { _id: 'secret' }", 11000), StoreError, id="OperationFailure"),
    ],
)
def test_map_errors_translates_driver_errors(error: Exception, expected: type[StoreError]) -> None:
    """Driver errors become StoreUnavailable or StoreError, chained, with original_error set."""
    with pytest.raises(StoreError) as caught, _map_errors:
        raise error
    assert type(caught.value) is expected
    assert caught.value.original_error is error
    assert caught.value.__cause__ is error
    assert "secret" not in str(caught.value)


# --- document shape ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.server
async def test_document_shape(store: AnyMongoStore, raw: MongoClient[dict[str, Any]]) -> None:
    """A saved session is one document: _id = sid, an aware UTC expires date, exact floats, escaped keys."""
    sid = new_sid()
    record = Record(
        {"a.b": 1, "$where": 2, "%": 3, "": 4, "x%2Ey": 5, "nested": {"in.ner": {"$x": [{"d.e": None}]}}},
        created=1_700_000_000.25,
        accessed=time.time() - 5.5,
        expires=time.time() + HOUR + 0.0004567,
    )
    await run(store.save(sid, record))
    document = raw_collection(raw, store).find_one({"_id": sid})
    assert document is not None
    assert set(document) == {"_id", "data", "created", "accessed", "expires", "expires_ts"}
    assert document["_id"] == sid
    assert isinstance(document["expires"], datetime)
    assert document["expires"].utcoffset() == timedelta(0)
    # Rounded down to BSON's milliseconds (compared as floats: a datetime would round the microseconds).
    assert 0 <= record.expires - document["expires"].timestamp() < 0.001
    assert document["expires_ts"] == record.expires
    assert document["created"] == record.created
    assert document["accessed"] == record.accessed
    assert document["data"] == {
        "a%2Eb": 1,
        "%24where": 2,
        "%25": 3,
        "%": 4,
        "x%252Ey": 5,
        "nested": {"in%2Ener": {"%24x": [{"d%2Ee": None}]}},
    }
    assert await run(store.load(sid)) == record


@pytest.mark.anyio
@pytest.mark.server
async def test_escaped_keys_survive_merge(store: AnyMongoStore, raw: MongoClient[dict[str, Any]]) -> None:
    """$set and $unset on escaped paths change exactly the named keys, '.', '$' and '%' included."""
    sid = new_sid()
    await run(store.save(sid, live({"a.b": 1, "$where": 2, "%": 3, "a": {"b": "untouched"}})))
    change = Change({"a.b": "new", "$new.key": [1], "": "empty"}, deleted=frozenset({"$where", "%", "missing."}))
    assert await run(store.merge(sid, change, time.time() + HOUR)) is True
    loaded = await run(store.load(sid))
    assert loaded is not None
    assert loaded.data == {"a.b": "new", "a": {"b": "untouched"}, "$new.key": [1], "": "empty"}
    document = raw_collection(raw, store).find_one({"_id": sid})
    assert set(document["data"]) == {"a%2Eb", "a", "%24new%2Ekey", "%"}


@pytest.mark.anyio
@pytest.mark.server
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(2**63, id="int over 64 bits"),
        pytest.param(-(2**63) - 1, id="int under 64 bits"),
        pytest.param("lone \ud800 surrogate", id="lone surrogate"),
    ],
)
async def test_values_bson_cannot_hold_are_refused(
    store: AnyMongoStore, raw: MongoClient[dict[str, Any]], value: Any
) -> None:
    """Values JSON accepts but BSON cannot hold raise NotSerializable naming the key, and write nothing."""
    sid = new_sid()
    with pytest.raises(NotSerializable) as caught:
        await run(store.save(sid, live({"ok": 1, "culprit": [value]})))
    assert caught.value.key == "culprit"
    assert raw_collection(raw, store).count_documents({}) == 0


# --- the TTL index -------------------------------------------------------------------------------


def ttl_indexes(collection: Any) -> list[dict[str, Any]]:
    """The indexes on exactly {expires: 1}."""
    return [index for index in collection.list_indexes() if dict(index["key"]) == {"expires": 1}]


@pytest.mark.anyio
@pytest.mark.server
async def test_ttl_index_is_created_on_first_use(store: AnyMongoStore, raw: MongoClient[dict[str, Any]]) -> None:
    """The first operation creates a TTL index on expires with expireAfterSeconds=0."""
    collection = raw_collection(raw, store)
    assert ttl_indexes(collection) == []
    assert await run(store.load(new_sid())) is None
    (index,) = ttl_indexes(collection)
    assert index["expireAfterSeconds"] == 0


@pytest.mark.anyio
@pytest.mark.server
@pytest.mark.parametrize(
    "existing",
    [
        pytest.param(None, id="made by another store"),
        pytest.param({"name": "ttl_on_expires", "expireAfterSeconds": 0}, id="same spec, other name"),
        pytest.param({"expireAfterSeconds": 3600}, id="same name, other options"),
    ],
)
async def test_existing_index_on_expires_is_tolerated(
    store: AnyMongoStore,
    raw: MongoClient[dict[str, Any]],
    mongo_server: AnyServer,
    flavour: str,
    existing: dict[str, Any] | None,
) -> None:
    """A store on a collection that already has an index on expires works and keeps that index."""
    collection = raw_collection(raw, store)
    if existing is None:
        assert await run(store.load(new_sid())) is None  # this store makes the index
    else:
        collection.create_index([("expires", 1)], **existing)
    before = ttl_indexes(collection)
    # A second store object on the same collection ensures the index again, from scratch.
    names = (collection.database.name, collection.name)
    second: AnyMongoStore
    if flavour == "sync":
        second = MongoStore(MongoClient(mongo_server.url)[names[0]][names[1]])
    else:
        second = AsyncMongoStore(AsyncMongoClient(mongo_server.url)[names[0]][names[1]])
    try:
        for each in (second, store):
            sid = new_sid()
            record = live({"who": flavour})
            await run(each.save(sid, record))
            assert await run(each.load(sid)) == record
    finally:
        await run(second.collection.database.client.close())
    assert ttl_indexes(collection) == before
    assert len(before) == 1


# --- expiry on read ------------------------------------------------------------------------------


def planted(*, at: float, **overrides: Any) -> dict[str, Any]:
    """A document written behind the store's back, expiring ``at``; ``overrides`` replace fields, ``...`` drops one."""
    now = time.time()
    document: dict[str, Any] = {
        "data": {"user": 42},
        "created": now - HOUR,
        "accessed": now - 60,
        "expires": datetime.fromtimestamp(at, timezone.utc),
        "expires_ts": at,
    }
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not ...}


@pytest.mark.anyio
@pytest.mark.server
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="both past"),
        pytest.param({"expires_ts": time.time() + HOUR}, id="date past, exact future"),
        pytest.param({"expires": datetime.now(timezone.utc) + timedelta(hours=1)}, id="date future, exact past"),
    ],
)
async def test_expired_document_is_not_returned_before_the_ttl_monitor_runs(
    store: AnyMongoStore, raw: MongoClient[dict[str, Any]], overrides: dict[str, Any]
) -> None:
    """A document past its expiry is neither loaded, merged nor touched, though it is still stored."""
    sid = new_sid()
    collection = raw_collection(raw, store)
    collection.insert_one({"_id": sid, **planted(at=time.time() - 10, **overrides)})
    assert await run(store.load(sid)) is None
    if "expires" not in overrides:  # the date is what merge and touch filter on
        assert await run(store.merge(sid, Change({"k": "v"}), time.time() + HOUR)) is False
        assert await run(store.touch(sid, time.time() + HOUR)) is False
    document = collection.find_one({"_id": sid})
    assert document is not None
    assert document["data"] == {"user": 42}


# --- merge, touch, save ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.server
async def test_merge_and_touch_on_missing_create_nothing(
    store: AnyMongoStore, raw: MongoClient[dict[str, Any]]
) -> None:
    """Merge and touch on an id with no document return False and insert no document."""
    sid = new_sid()
    assert await run(store.merge(sid, Change({"user": 42}), time.time() + HOUR)) is False
    assert await run(store.merge(sid, Change({"user": 42}, cleared=True), time.time() + HOUR)) is False
    assert await run(store.touch(sid, time.time() + HOUR)) is False
    assert raw_collection(raw, store).count_documents({}) == 0


@pytest.mark.anyio
@pytest.mark.server
async def test_merge_cleared_replaces_data_in_one_update(
    store: AnyMongoStore, raw: MongoClient[dict[str, Any]]
) -> None:
    """A cleared merge leaves only the keys it sets, and keeps created."""
    sid = new_sid()
    before = live({"a": 1, "b.c": 2})
    await run(store.save(sid, before))
    assert await run(store.merge(sid, Change({"z.z": 26}, cleared=True), time.time() + HOUR)) is True
    document = raw_collection(raw, store).find_one({"_id": sid})
    assert document["data"] == {"z%2Ez": 26}
    assert document["created"] == before.created


@pytest.mark.anyio
@pytest.mark.server
async def test_200_concurrent_async_merges_keep_every_key(mongo_server: AnyServer) -> None:
    """Two hundred merges of distinct keys, gathered on one AsyncMongoStore, leave two hundred keys."""
    async with make_mongo_store("async", "concurrent_async") as store:
        sid = new_sid()
        await store.save(sid, live({}))
        expires = time.time() + HOUR
        results = await asyncio.gather(*(store.merge(sid, Change({f"k.{i}": i}), expires) for i in range(200)))
        assert results == [True] * 200
        loaded = await store.load(sid)
        assert loaded is not None
        assert loaded.data == {f"k.{i}": i for i in range(200)}


@pytest.mark.anyio
@pytest.mark.server
async def test_200_concurrent_threaded_merges_keep_every_key(mongo_server: AnyServer) -> None:
    """Two hundred merges of distinct keys from a thread pool on one MongoStore leave two hundred keys."""
    async with make_mongo_store("sync", "concurrent_threads") as store:
        sid = new_sid()
        store.save(sid, live({}))
        expires = time.time() + HOUR
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(lambda i: store.merge(sid, Change({f"k${i}": i}), expires), range(200)))
        assert results == [True] * 200
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.data == {f"k${i}": i for i in range(200)}


@pytest.mark.anyio
@pytest.mark.server
async def test_save_with_replaces_removes_the_old_document(
    store: AnyMongoStore, raw: MongoClient[dict[str, Any]]
) -> None:
    """Saving with replaces= leaves the new document and deletes the old one."""
    old, new = new_sid(), new_sid()
    await run(store.save(old, live({"user": 1})))
    await run(store.save(new, live({"user": 1, "rotated": True}), replaces=old))
    collection = raw_collection(raw, store)
    assert collection.count_documents({"_id": old}) == 0
    assert collection.count_documents({"_id": new}) == 1


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.server
async def test_round_trips_per_operation(mongo_server: AnyServer, flavour: Flavour) -> None:
    """load, merge, touch, save and delete are one command each; save with replaces= is two; the index is made once."""
    counter = CommandCounter()
    async with make_mongo_store(flavour, "round_trips", event_listeners=[counter]) as store:
        sid, old = new_sid(), new_sid()
        await run(store.save(old, live({"a": 1})))
        assert counter.take() == ["createIndexes", "update"]
        await run(store.load(sid))
        assert counter.take() == ["find"]
        await run(store.save(sid, live({"a": 1}), replaces=old))
        assert counter.take() == ["update", "delete"]
        assert await run(store.load(sid)) is not None
        assert counter.take() == ["find"]
        assert await run(store.merge(sid, Change({"b": 2}, deleted=frozenset({"a"})), time.time() + HOUR)) is True
        assert counter.take() == ["update"]
        assert await run(store.touch(sid, time.time() + HOUR)) is True
        assert counter.take() == ["update"]
        await run(store.delete(sid))
        assert counter.take() == ["delete"]


# --- malformed documents -------------------------------------------------------------------------


def _future() -> float:
    return time.time() + HOUR


MALFORMED = [
    pytest.param({"data": "not a document"}, id="data is a string"),
    pytest.param({"data": [1, 2]}, id="data is an array"),
    pytest.param({"data": ...}, id="data missing"),
    pytest.param({"expires": ...}, id="expires missing"),
    pytest.param({"expires": "tomorrow"}, id="expires a string"),
    pytest.param({"expires_ts": ...}, id="expires_ts missing"),
    pytest.param({"expires_ts": "soon"}, id="expires_ts a string"),
    pytest.param({"created": True}, id="created a bool"),
    pytest.param({"accessed": ...}, id="accessed missing"),
    pytest.param({"data": {"blob": Binary(b"\x80\x04pickle")}}, id="Binary in data"),
    pytest.param({"data": {"deep": [{"blob": Binary(b"x", 0)}]}}, id="Binary nested in data"),
    pytest.param({"data": {"oid": ObjectId()}}, id="ObjectId in data"),
    pytest.param({"data": {"when": datetime.now(timezone.utc)}}, id="date in data"),
    pytest.param({"data": {"%zz": 1}}, id="bad escape in a field name"),
]


@pytest.mark.anyio
@pytest.mark.server
@pytest.mark.parametrize("overrides", MALFORMED)
async def test_malformed_document_loads_as_none_with_one_warning(
    store: AnyMongoStore,
    raw: MongoClient[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
) -> None:
    """A live document that is not a well-formed session loads as None and logs one WARNING without the id."""
    sid = new_sid()
    raw_collection(raw, store).insert_one({"_id": sid, **planted(at=_future(), **overrides)})
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert await run(store.load(sid)) is None
    warnings = [r for r in caplog.records if r.name == "persession.security" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert sid not in warnings[0].getMessage()
    assert "malformed" in warnings[0].getMessage()


@pytest.mark.anyio
@pytest.mark.server
async def test_document_without_an_expires_date_is_never_merged_or_touched(
    store: AnyMongoStore, raw: MongoClient[dict[str, Any]]
) -> None:
    """A document without an expires date (which the TTL monitor never deletes) is not live for merge or touch."""
    sid = new_sid()
    collection = raw_collection(raw, store)
    collection.insert_one({"_id": sid, **planted(at=_future(), expires=...)})
    assert await run(store.merge(sid, Change({"k": 1}), _future())) is False
    assert await run(store.touch(sid, _future())) is False
    assert collection.find_one({"_id": sid})["data"] == {"user": 42}


@pytest.mark.anyio
@pytest.mark.server
async def test_int64_values_load_as_plain_int(store: AnyMongoStore) -> None:
    """Integers stored as BSON int64 load back as plain Python ints."""
    sid = new_sid()
    await run(store.save(sid, live({"big": 2**62, "list": [-(2**63)]})))
    loaded = await run(store.load(sid))
    assert loaded is not None
    assert type(loaded.data["big"]) is int
    assert loaded.data == {"big": 2**62, "list": [-(2**63)]}


# --- outage --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.server
async def test_outage_raises_store_unavailable_then_recovers(
    mongo_server: AnyServer, flavour: str, tmp_path: Path
) -> None:
    """A stopped server gives StoreUnavailable within the timeouts; a new server on its port heals the store."""
    if mongo_server.external:
        pytest.skip("cannot stop an external server")
    with MongoServer(tmp_path / "data") as server:
        url = f"mongodb://127.0.0.1:{server.port}/outage"
        store: AnyMongoStore = MongoStore.from_url(url) if flavour == "sync" else AsyncMongoStore.from_url(url)
        try:
            sid = new_sid()
            record = live({"user": 42})
            await run(store.save(sid, record))
            server.stop()
            limit = (DEFAULT_SERVER_SELECTION_TIMEOUT_MS + DEFAULT_CONNECT_TIMEOUT_MS) / 1000 + 1.0
            for operation in (lambda: store.load(sid), lambda: store.touch(sid, _future())):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as caught:
                    await run(operation())
                assert time.monotonic() - started < limit
                assert isinstance(caught.value.original_error, ConnectionFailure)
                assert caught.value.__cause__ is caught.value.original_error
            server.start()  # same port, same data directory
            assert await run(store.load(sid)) == record
            assert await run(store.merge(sid, Change({"back": True}), _future())) is True
        finally:
            await run(store.close())


# --- URLs ----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.server
async def test_store_from_url_takes_the_database_from_the_path(
    mongo_server: AnyServer, raw: MongoClient[dict[str, Any]]
) -> None:
    """mongodb://host/db gives a MongoStore on db.sessions that works and can build its async twin."""
    database = f"ps_url_{uuid.uuid4().hex[:8]}"
    store = store_from_url(mongo_server.url.rstrip("/") + f"/{database}")
    try:
        assert isinstance(store, MongoStore)
        assert store.collection.full_name == f"{database}.sessions"
        sid = new_sid()
        record = live({"via": "url"})
        store.save(sid, record)
        twin = store.to_async()
        assert isinstance(twin, AsyncMongoStore)
        try:
            assert await twin.load(sid) == record
        finally:
            await twin.close()
    finally:
        store.close()
        raw.drop_database(database)


@pytest.mark.anyio
@pytest.mark.server
async def test_store_from_url_collection_parameter_is_not_passed_to_pymongo(
    mongo_server: AnyServer, raw: MongoClient[dict[str, Any]]
) -> None:
    """?collection= names the collection and is stripped before PyMongo, which warns on unknown options."""
    database = f"ps_url_{uuid.uuid4().hex[:8]}"
    url = mongo_server.url.rstrip("/") + f"/{database}?collection=web_sessions&serverSelectionTimeoutMS=1500"
    store = store_from_url(url)  # filterwarnings=error: an unknown option would fail here
    try:
        assert isinstance(store, MongoStore)
        assert store.collection.full_name == f"{database}.web_sessions"
        assert store.collection.database.client.options.server_selection_timeout == 1.5
        store.save(new_sid(), live({}))
        assert raw[database]["web_sessions"].count_documents({}) == 1
    finally:
        store.close()
        raw.drop_database(database)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mongodb://127.0.0.1:27017/", id="no database"),
        pytest.param("mongodb://127.0.0.1:27017", id="no path"),
        pytest.param("mongodb://127.0.0.1:27017/?collection=x", id="only a collection"),
        pytest.param("mongodb:///db", id="no host"),
        pytest.param("mongodb://user:pw@/db", id="credentials but no host"),
        pytest.param("mongodb://127.0.0.1:port/db", id="a URL pymongo refuses"),
    ],
)
def test_store_from_url_refuses_unusable_urls(url: str) -> None:
    """A MongoDB URL without a database or a host is a ConfigError naming url, never a localhost fallback."""
    with pytest.raises(ConfigError) as caught:
        store_from_url(url)
    assert caught.value.option == "url"


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_from_url_bounds_the_timeouts(flavour: str) -> None:
    """from_url sets 2 s server-selection, connect and socket timeouts unless the URL or caller set them."""
    cls = MongoStore if flavour == "sync" else AsyncMongoStore
    store = cls.from_url("mongodb+srv://cluster0.example.invalid/app")  # built without touching the network
    overridden = cls.from_url("mongodb://127.0.0.1:9/app?connectTimeoutMS=700", socketTimeoutMS=800)
    try:
        options = store.collection.database.client.options
        assert options.server_selection_timeout == DEFAULT_SERVER_SELECTION_TIMEOUT_MS / 1000
        assert options.pool_options.connect_timeout == DEFAULT_CONNECT_TIMEOUT_MS / 1000
        assert options.pool_options.socket_timeout == DEFAULT_SOCKET_TIMEOUT_MS / 1000
        other = overridden.collection.database.client.options
        assert other.pool_options.connect_timeout == 0.7
        assert other.pool_options.socket_timeout == 0.8
        assert store.collection.full_name == "app.sessions"
    finally:
        await run(store.close())
        await run(overridden.close())


def test_to_async_needs_a_store_built_from_a_url() -> None:
    """to_async() on a store built on a caller's collection is a ConfigError pointing at AsyncMongoStore."""
    client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9/", connect=False)
    try:
        with pytest.raises(ConfigError, match="AsyncMongoStore"):
            MongoStore(client["db"]["sessions"]).to_async()
    finally:
        client.close()


@pytest.mark.anyio
async def test_stores_refuse_the_other_flavours_collection() -> None:
    """MongoStore refuses an AsyncCollection and AsyncMongoStore a Collection, naming the right class."""
    sync_client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9/", connect=False)
    async_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient("mongodb://127.0.0.1:9/")
    try:
        with pytest.raises(ConfigError, match="AsyncMongoStore"):
            MongoStore(async_client["db"]["s"])  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="use MongoStore"):
            AsyncMongoStore(sync_client["db"]["s"])  # type: ignore[arg-type]
    finally:
        sync_client.close()
        await async_client.close()


# --- imports -------------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)


def test_importing_persession_stores_does_not_import_pymongo() -> None:
    """`import persession.stores` loads neither pymongo nor bson; MongoStore loads them on first access."""
    result = _python(
        "import sys, persession.stores as s\n"
        "assert 'pymongo' not in sys.modules and 'bson' not in sys.modules, 'eager'\n"
        "assert s.MongoStore.__module__ == 'persession.stores.mongo'\n"
        "assert s.AsyncMongoStore.__name__ == 'AsyncMongoStore'\n"
        "assert 'pymongo' in sys.modules\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_pymongo_is_a_config_error_with_the_install_hint() -> None:
    """Without pymongo, a mongodb:// URL raises ConfigError saying pip install "persession-web[mongo]"."""
    result = _python(
        "import sys\n"
        "sys.modules['pymongo'] = None\n"
        "from persession import ConfigError, MissingExtra\n"
        "from persession.stores import store_from_url\n"
        "try:\n"
        "    store_from_url('mongodb://127.0.0.1/db')\n"
        "except ImportError as error:\n"
        "    assert isinstance(error, ConfigError) and isinstance(error, MissingExtra), type(error)\n"
        "    print(error, error.extra)\n"
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "persession-web[mongo]"' in result.stdout
    assert result.stdout.split()[-1] == "mongo"


def test_datetime_rounding_never_extends_a_session() -> None:
    """The stored expires date is the exact expiry rounded down to the millisecond, never up."""
    from persession.stores.mongo._documents import _date

    for value in (1_700_000_000.0009996, 1_700_000_000.001, 1_700_000_000.9999, 0.0005):
        stored = _date(value)
        assert stored.timestamp() <= value
        assert value - stored.timestamp() < 0.001 + 1e-6
        assert stored.microsecond % 1000 == 0
    assert math.isclose(_date(1.5).timestamp(), 1.5)


def test_store_from_url_refuses_client_options_pymongo_refuses() -> None:
    """A client option PyMongo rejects is a ConfigError naming url, raised before any connection."""
    with pytest.raises(ConfigError) as caught:
        store_from_url("mongodb://127.0.0.1:9/db", socketTimeoutMS="soon")
    assert caught.value.option == "url"


def test_an_unknown_layout_is_a_config_error_naming_it(mongo_server: AnyServer) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url, serverSelectionTimeoutMS=2000)
    try:
        for layout in (["persession"], "connect-redis", None):
            with pytest.raises(ConfigError) as raised:
                MongoStore(client["db"]["sessions"], layout=layout)  # type: ignore[arg-type]
            assert raised.value.option == "layout"
    finally:
        client.close()


def test_a_url_layout_that_contradicts_the_keyword_is_a_config_error(mongo_server: AnyServer) -> None:
    url = mongo_server.url.rstrip("/") + "/db?layout=connect-mongo"
    with pytest.raises(ConfigError) as raised:
        MongoStore.from_url(url, layout="persession")
    assert raised.value.option == "layout"


@pytest.mark.anyio
async def test_to_async_keeps_the_connect_mongo_layout(mongo_server: AnyServer) -> None:
    database = f"twin_{uuid.uuid4().hex[:8]}"
    store = MongoStore.from_url(mongo_server.url.rstrip("/") + f"/{database}", layout="connect-mongo")
    twin = store.to_async()
    try:
        assert twin.layout == "connect-mongo"
        sid = new_sid()
        await twin.save(sid, live({"user": "alice"}))
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.data["user"] == "alice"
    finally:
        await twin.close()
        store.close()
        cleanup: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url)
        cleanup.drop_database(database)
        cleanup.close()
