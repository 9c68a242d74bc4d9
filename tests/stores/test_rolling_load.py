"""``load_touch``: a rolling session loaded and refreshed in one round trip, the backend details.

What ``load_touch`` returns and writes, on every store kind, layout and
transport, is the contract suite's (``test_contract_rolling.py``); this file
keeps what each backend does behind it (TTLs, round trips, malformed records,
SQL).

Each store comes wrapped in a :class:`Kit`: the async store protocol plus
``load_touch`` (a sync store goes through ``_stores.adapt``, so both twins run
the same test body), and the store itself for backend checks.
SQLite runs twice: with ``UPDATE ... RETURNING`` and with the transaction used
before SQLite 3.35 (forced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster
from pymongo import MongoClient

import persession.stores
from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisServers,
    make_redis_store,
    redis_servers_fixture,
    unique_prefix,
)
from _stores import (
    HOUR,
    AsyncCountingConnection,
    CommandCounter,
    CountingConnection,
    adapt,
    command_calls,
    delta,
    live,
    new_sid,
)
from persession.records import Record
from persession.stores import (
    AsyncMemoryStore,
    AsyncRollingLoad,
    AsyncSqliteStore,
    MemoryStore,
    RollingLoad,
    SqliteStore,
)
from persession.stores import sqlite as sqlite_module
from persession.stores.mongo import AsyncMongoStore, MongoStore
from persession.stores.mongo._documents import _date
from persession.stores.redis import AsyncRedisStore, RedisStore

pytestmark = pytest.mark.anyio

IDLE = HOUR
#: How long the records these tests save live: shorter than IDLE, so a refresh visibly moves the expiry.
TTL = 600.0


# --- the stores under test ------------------------------------------------------------------------


@dataclass
class Kit:
    """A store under test (async protocol plus ``load_touch``) and the store it wraps."""

    kind: str
    store: Any
    #: The store itself: the sync one for a sync kind, else the async one.
    native: Any


KINDS = [
    "memory-sync",
    "memory-async",
    "sqlite-sync",
    "sqlite-async",
    "sqlite_fallback-sync",
    "sqlite_fallback-async",
    "redis-single-sync",
    "redis-single-async",
    "redis-cluster-sync",
    "redis-cluster-async",
    "mongo-sync",
    "mongo-async",
]
SERVER_KINDS = {kind for kind in KINDS if kind.startswith(("redis", "mongo"))}


def _kit(kind: str, store: Any) -> Kit:
    return Kit(kind, adapt(store), store)


@contextlib.asynccontextmanager
async def open_kit(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    """A fresh store of ``kind`` in a :class:`Kit`, closed (and its data removed) afterwards."""
    backend, *rest = kind.split("-")
    flavour = rest[-1]
    if backend == "memory":
        yield _kit(kind, MemoryStore() if flavour == "sync" else AsyncMemoryStore())
    elif backend.startswith("sqlite"):
        path = tmp_path / "sessions.db"
        sqlite = SqliteStore(path) if flavour == "sync" else AsyncSqliteStore(path)
        sqlite._db.returning = backend == "sqlite"  # sqlite_fallback: as on SQLite before 3.35
        try:
            yield _kit(kind, sqlite)
        finally:
            if isinstance(sqlite, AsyncSqliteStore):
                await sqlite.close()
            else:
                sqlite.close()
    elif backend == "redis":
        servers: RedisServers = request.getfixturevalue("redis_servers")
        async with make_redis_store(flavour, rest[0], "rolling", servers=servers) as store:  # type: ignore[arg-type]
            yield _kit(kind, store)
    else:
        request.getfixturevalue("mongo_server")
        async with make_mongo_store(flavour, "rolling") as mongo:  # type: ignore[arg-type]
            yield _kit(kind, mongo)


def _params(kinds: list[str]) -> list[Any]:
    return [pytest.param(kind, id=kind, marks=[pytest.mark.server] if kind in SERVER_KINDS else []) for kind in kinds]


def only(*backends: str) -> pytest.MarkDecorator:
    """Run a test with the ``kit`` fixture on the kinds of these backends only."""
    return pytest.mark.parametrize("kit", _params([k for k in KINDS if k.startswith(backends)]), indirect=True)


@pytest.fixture(params=_params(KINDS))
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    """Every store kind and flavour, fresh for each test."""
    async with open_kit(request.param, request, tmp_path) as opened:
        yield opened


# --- the protocol ---------------------------------------------------------------------------------


async def test_every_store_implements_rolling_load(kit: Kit) -> None:
    """Every built-in store satisfies RollingLoad (sync) or AsyncRollingLoad (async), as the shells check."""
    if kit.kind.endswith("-sync"):
        assert isinstance(kit.native, RollingLoad)
    else:
        assert isinstance(kit.native, AsyncRollingLoad)
        assert asyncio.iscoroutinefunction(kit.native.load_touch)


def test_protocols_are_exported_and_optional() -> None:
    """The protocols are exported from persession.stores, and a store without load_touch does not satisfy them."""
    assert persession.stores.RollingLoad is RollingLoad
    assert persession.stores.AsyncRollingLoad is AsyncRollingLoad
    assert {"RollingLoad", "AsyncRollingLoad"} <= set(persession.stores.__all__)

    class PlainStore:
        def load(self, sid: str) -> Record | None:
            return None

    assert not isinstance(PlainStore(), RollingLoad)
    assert not isinstance(PlainStore(), AsyncRollingLoad)


# --- backend details --------------------------------------------------------------------------------


def _redis_kit(kit: Kit) -> RedisStore | AsyncRedisStore:
    assert isinstance(kit.native, (RedisStore, AsyncRedisStore))
    return kit.native


@contextlib.contextmanager
def raw_redis(kit: Kit, request: pytest.FixtureRequest) -> Iterator[redis.Redis | redis.cluster.RedisCluster]:
    """A plain sync client to the kit's Redis server or cluster, for looking behind the store's back."""
    servers: RedisServers = request.getfixturevalue("redis_servers")
    client = servers.cluster().client() if "cluster" in kit.kind else servers.single().client()
    try:
        yield client
    finally:
        client.close()


@only("redis")
async def test_redis_load_touch_sets_the_key_ttl(kit: Kit, request: pytest.FixtureRequest) -> None:
    """Redis: the key's TTL follows the new expiry, the absolute cap included."""
    store = _redis_kit(kit)
    sid, capped = new_sid(), new_sid()
    await kit.store.save(sid, live(ttl=60.0))
    await kit.store.save(capped, live(age=1000.0, ttl=60.0))
    assert await kit.store.load_touch(sid, IDLE, None) is not None
    assert await kit.store.load_touch(capped, IDLE, 1500.0) is not None
    with raw_redis(kit, request) as raw:
        assert IDLE * 1000 - 5000 < raw.pttl(store.prefix + sid) <= IDLE * 1000
        assert 500_000 - 5000 < raw.pttl(store.prefix + capped) <= 500_000


@only("redis")
async def test_redis_load_touch_extends_the_user_index_like_touch(kit: Kit, request: pytest.FixtureRequest) -> None:
    """Redis: on a single server load_touch extends the user index's TTL, as touch does; a cluster leaves it."""
    store = _redis_kit(kit)
    sid, user = new_sid(), f"u-{uuid.uuid4().hex[:8]}"
    await kit.store.save(sid, live(ttl=60.0))
    native = kit.native
    if isinstance(native, AsyncRedisStore):
        await native.index_user(user, sid, time.time() + 60)
    else:
        native.index_user(user, sid, time.time() + 60)
    index = store.prefix + "user:" + user
    with raw_redis(kit, request) as raw:
        before = raw.pttl(index)
        assert await kit.store.load_touch(sid, IDLE, None) is not None
        after = raw.pttl(index)
    if "cluster" in kit.kind:
        assert before == after == -1  # a cluster's index has no TTL (see the module docs)
    else:
        assert 0 < before <= 60_000
        assert IDLE * 1000 - 5000 < after <= IDLE * 1000


@only("redis")
async def test_redis_malformed_records_behave_as_in_load(
    kit: Kit, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis: a non-hash key or a hash without metadata gives None and load's warning; nothing is written."""
    store = _redis_kit(kit)
    not_hash, no_meta = new_sid(), new_sid()
    with raw_redis(kit, request) as raw:
        raw.set(store.prefix + not_hash, "x")
        raw.hset(store.prefix + no_meta, mapping={".a": "1", "expires": repr(time.time() + HOUR)})
        planted = raw.hgetall(store.prefix + no_meta)
        for sid in (not_hash, no_meta):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="persession.security"):
                assert await kit.store.load(sid) is None
            expected = [r.getMessage() for r in caplog.records]
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="persession.security"):
                assert await kit.store.load_touch(sid, IDLE, 1000.0) is None
            assert [r.getMessage() for r in caplog.records] == expected
            assert len(expected) == 1
        assert raw.get(store.prefix + not_hash) == b"x"
        assert raw.hgetall(store.prefix + no_meta) == planted
        assert raw.pttl(store.prefix + no_meta) == -1  # not given a TTL either


def _mongo_kit(kit: Kit) -> MongoStore | AsyncMongoStore:
    assert isinstance(kit.native, (MongoStore, AsyncMongoStore))
    return kit.native


@contextlib.contextmanager
def raw_collection(kit: Kit, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A plain sync client's view of the kit's collection."""
    server = request.getfixturevalue("mongo_server")
    store = _mongo_kit(kit)
    client: MongoClient[dict[str, Any]] = MongoClient(server.url, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        yield client[store.collection.database.name][store.collection.name]
    finally:
        client.close()


@only("mongo")
async def test_mongo_load_touch_computes_the_date_as_python_does(kit: Kit, request: pytest.FixtureRequest) -> None:
    """MongoDB: the server-computed capped expiry's date (the TTL index's field) is the one Python would write."""
    _mongo_kit(kit)
    sid, record = new_sid(), live(age=1000.0, ttl=TTL)
    await kit.store.save(sid, record)
    refreshed = await kit.store.load_touch(sid, IDLE, 1500.25)
    assert refreshed is not None
    with raw_collection(kit, request) as collection:
        document = collection.find_one({"_id": sid})
    assert document["expires_ts"] == record.created + 1500.25
    assert document["expires"] == _date(record.created + 1500.25)
    assert document["accessed"] == refreshed.accessed


@only("mongo")
async def test_mongo_malformed_documents_behave_as_in_load(
    kit: Kit, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """MongoDB: a document that is not ours gives None and load's warning, and is left exactly as it was."""
    _mongo_kit(kit)
    now = time.time()
    good = {"data": {}, "created": now, "accessed": now, "expires": _date(now + HOUR), "expires_ts": now + HOUR}
    planted = {
        new_sid(): {**good, "created": "yesterday"},
        new_sid(): {**good, "created": math.nan},
        new_sid(): {**good, "expires": "soon"},
        new_sid(): {key: value for key, value in good.items() if key != "expires"},
    }
    with raw_collection(kit, request) as collection:
        collection.insert_many([{"_id": sid, **document} for sid, document in planted.items()])
        for sid in planted:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="persession.security"):
                assert await kit.store.load(sid) is None
            expected = [r.getMessage() for r in caplog.records]
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="persession.security"):
                assert await kit.store.load_touch(sid, IDLE, 1000.0) is None
            assert [r.getMessage() for r in caplog.records] == expected
            assert len(expected) == 1
            stored = collection.find_one({"_id": sid})
            unchanged = {"_id": sid, **planted[sid]}
            if "expires" in unchanged and isinstance(unchanged["expires"], datetime):
                unchanged["expires"] = unchanged["expires"].astimezone(timezone.utc)
            assert stored.keys() == unchanged.keys()
            for key, value in unchanged.items():
                assert stored[key] == value or (value != value and stored[key] != stored[key])  # NaN stays NaN


@only("sqlite")
async def test_sqlite_malformed_data_behaves_as_in_load(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite: a row whose data is not a JSON object gives None and load's warning."""
    sid, now = new_sid(), time.time()
    await kit.store.save(new_sid(), live(ttl=TTL))  # creates the file and its tables
    with contextlib.closing(sqlite3.connect(kit.native.path)) as connection, connection:
        connection.execute(
            "INSERT INTO persession_sessions (id, data, created, accessed, expires) VALUES (?, ?, ?, ?, ?)",
            (sid, "[1, 2]", now, now, now + HOUR),
        )
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert await kit.store.load(sid) is None
    expected = [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert await kit.store.load_touch(sid, IDLE, None) is None
    assert (
        [r.getMessage() for r in caplog.records]
        == expected
        == ["malformed session record in SQLite table persession_sessions ignored"]
    )


# --- round trips ------------------------------------------------------------------------------------


async def _sqlite_connection(kit: Kit) -> sqlite3.Connection:
    """The connection the kit's SQLite store uses (the async store's lives on its own thread)."""
    native = kit.native
    if isinstance(native, AsyncSqliteStore):
        return await native._run(native._db._connect)
    connection: sqlite3.Connection = native._db._connect()
    return connection


@only("sqlite")
async def test_sqlite_load_touch_is_one_statement(kit: Kit) -> None:
    """SQLite 3.35+: one UPDATE ... RETURNING; the fallback: one transaction of SELECT and UPDATE."""
    sid = new_sid()
    await kit.store.save(sid, live(ttl=TTL))
    connection = await _sqlite_connection(kit)
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        assert await kit.store.load_touch(sid, IDLE, None) is not None
        plain = [statement.split()[0].upper() for statement in statements]
        statements.clear()
        assert await kit.store.load_touch(sid, IDLE, 1000.0) is not None
        capped = [statement.split()[0].upper() for statement in statements]
        last = statements[-1]
    finally:
        connection.set_trace_callback(None)
    if kit.kind.startswith("sqlite_fallback"):
        assert plain == capped == ["BEGIN", "SELECT", "UPDATE", "COMMIT"]
    else:
        assert plain == capped == ["UPDATE"]
        assert "RETURNING" in last
        assert "min(" in last  # the cap is computed by SQLite from the stored created


@only("sqlite")
async def test_sqlite_load_touch_commits_at_once(kit: Kit) -> None:
    """SQLite: once load_touch returns, another connection sees the new expiry and can take the write lock."""
    sid = new_sid()
    await kit.store.save(sid, live(ttl=TTL))
    refreshed = await kit.store.load_touch(sid, IDLE, None)
    assert refreshed is not None
    with contextlib.closing(sqlite3.connect(kit.native.path, timeout=0, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if load_touch still held it
        (expires,) = other.execute("SELECT expires FROM persession_sessions WHERE id = ?", (sid,)).fetchone()
        other.execute("ROLLBACK")
    assert expires == refreshed.expires


def test_sqlite_returning_is_used_whenever_the_library_has_it(tmp_path: Path) -> None:
    """The one-statement path is chosen from sqlite3.sqlite_version (3.35 added RETURNING)."""
    store = SqliteStore(tmp_path / "s.db")
    try:
        assert store._db.returning is sqlite_module.HAS_RETURNING
        assert sqlite_module.HAS_RETURNING is (sqlite3.sqlite_version_info >= (3, 35, 0))
    finally:
        store.close()


@pytest.mark.server
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_redis_single_load_touch_is_one_evalsha(redis_servers: RedisServers, flavour: str) -> None:
    """Redis (one server): load_touch sends one request, an EVALSHA, counted by the client and the server."""
    server = redis_servers.single()
    prefix = unique_prefix("rolling-rt")
    sid = new_sid()
    with server.client() as observer:
        if flavour == "sync":
            client = redis.Redis.from_url(server.url, connection_class=CountingConnection)
            store: Any = RedisStore(client, prefix=prefix)
            store.save(sid, live(ttl=TTL))
            store.load_touch(sid, IDLE, None)  # warm up: connection and the script's first EVAL
            store.load_touch(sid, IDLE, 1000.0)
            before = command_calls(observer)
            CountingConnection.sent.clear()
            assert store.load_touch(sid, IDLE, 1000.0) is not None
            sent = list(CountingConnection.sent)
            client.close()
        else:
            aclient = redis.asyncio.Redis.from_url(server.url, connection_class=AsyncCountingConnection)
            store = AsyncRedisStore(aclient, prefix=prefix)
            await store.save(sid, live(ttl=TTL))
            await store.load_touch(sid, IDLE, None)
            before = command_calls(observer)
            AsyncCountingConnection.sent.clear()
            assert await store.load_touch(sid, IDLE, None) is not None
            sent = list(AsyncCountingConnection.sent)
            await aclient.aclose()
        stats = delta(before, command_calls(observer))
        observer.delete(prefix + sid)
    assert len(sent) == 1
    assert b"EVALSHA" in sent[0].upper()
    # One EVALSHA; the rest ran inside it (single server: it also reads the session's index field).
    assert stats == {**LOAD_TOUCH_STATS, "hget": 1}


#: What one load_touch runs on a Redis server: the EVALSHA, and the script's own commands inside it.
LOAD_TOUCH_STATS = {"evalsha": 1, "hmget": 1, "hset": 1, "pexpire": 1, "hgetall": 1}


@pytest.mark.server
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_redis_cluster_load_touch_is_one_evalsha(redis_servers: RedisServers, flavour: str) -> None:
    """Redis Cluster: load_touch is one EVALSHA on the key's node and nothing else on any node (server counts)."""
    cluster = redis_servers.cluster()
    prefix = unique_prefix("rolling-rt")
    sid = new_sid()
    # redis-py's cluster clients take no connection_class: count on every node instead.
    with cluster.client() as observer:
        nodes = [node.redis_connection for node in observer.get_nodes()]
        assert len(nodes) >= 3
        if flavour == "sync":
            client = cluster.client()
            store: Any = RedisStore(client, prefix=prefix)
            store.save(sid, live(ttl=TTL))
            store.load_touch(sid, IDLE, 1000.0)  # warm up: slots, connection, the script's first EVAL
            before = command_calls(*nodes)  # type: ignore[arg-type]
            assert store.load_touch(sid, IDLE, 1000.0) is not None
            client.close()
        else:
            aclient = cluster.async_client()
            store = AsyncRedisStore(aclient, prefix=prefix)
            await store.save(sid, live(ttl=TTL))
            await store.load_touch(sid, IDLE, 1000.0)
            before = command_calls(*nodes)  # type: ignore[arg-type]
            assert await store.load_touch(sid, IDLE, 1000.0) is not None
            await aclient.aclose()
        stats = delta(before, command_calls(*nodes))  # type: ignore[arg-type]
        observer.delete(prefix + sid)
    assert stats == LOAD_TOUCH_STATS


@pytest.mark.server
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_mongo_load_touch_is_one_find_and_modify(mongo_server: Any, flavour: str) -> None:
    """MongoDB: load_touch is one findAndModify, with or without the absolute cap, and for a missing id."""
    counter = CommandCounter()
    async with make_mongo_store(flavour, "rolling_rt", event_listeners=[counter]) as native:  # type: ignore[call-overload]
        store: Any = adapt(native)
        sid = new_sid()
        await store.save(sid, live(ttl=TTL))
        assert counter.take() == ["createIndexes", "update"]
        assert await store.load_touch(sid, IDLE, None) is not None
        assert counter.take() == ["findAndModify"]
        assert await store.load_touch(sid, IDLE, 1000.0) is not None
        assert counter.take() == ["findAndModify"]
        assert await store.load_touch(new_sid(), IDLE, 1000.0) is None
        assert counter.take() == ["findAndModify"]
