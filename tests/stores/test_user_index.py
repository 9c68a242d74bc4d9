"""The per-user session index, backend by backend: what each stores, its round trips, and Redis revocations.

What every store that keeps an index must do (listing, order, pruning, odd
user ids, revocation, the engine's login plans) is the contract, on every
store kind: ``test_contract_index.py``. This file keeps what is particular to
a backend: SQLite's table and purge, MongoDB's commands and index, Redis'
round trips, key layout and TTLs, and revocations reaching a watcher in
another client, a cluster, or across a server restart. Sync stores go
through ``_stores.adapt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import persession
import persession.stores
from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisServer,
    RedisServers,
    make_redis_store,
    redis_cluster_fixture,
    redis_server_fixture,
    redis_servers_fixture,
    unique_prefix,
)
from _stores import (
    AsyncCountingConnection,
    CommandCounter,
    CountingConnection,
    adapt,
    command_calls,
    delta,
    live,
    new_sid,
)
from persession.records import Record, SessionInfo
from persession.stores import RevocationFeed, SqliteStore
from persession.stores.redis import AsyncRedisStore, RedisStore

pytestmark = pytest.mark.anyio

#: How long a test waits for something another client or process does.
DEADLINE = 10.0
#: Seconds since a test record's last access: unlike its age, so a store that lists created as accessed fails.
ACTIVE = 1.5


def new_user(label: str = "u") -> str:
    """A user id no other test uses (stores on shared servers keep data between tests)."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def info(sid: str, record: Record) -> SessionInfo:
    """What the index should report for ``record`` saved under ``sid``."""
    return SessionInfo(sid, created=record.created, accessed=record.accessed, expires=record.expires)


async def saved(store: Any, user: str | None) -> tuple[str, Record]:
    """Save a new session on an async store (indexed under ``user`` unless None); return its id and record."""
    sid, record = new_sid(), live(idle=ACTIVE)
    await store.save(sid, record)
    if user is not None:
        await store.index_user(user, sid, record.expires)
    return sid, record


# --- the exports -----------------------------------------------------------------------------------


def test_index_types_are_exported() -> None:
    """SessionInfo is at the top level and in persession.stores, beside the index and feed protocols."""
    assert persession.SessionInfo is SessionInfo
    assert "SessionInfo" in persession.__all__
    for name in ("UserIndex", "AsyncUserIndex", "RevocationFeed", "SessionInfo"):
        assert name in persession.stores.__all__
        assert getattr(persession.stores, name) is not None
    assert persession.stores.SessionInfo is SessionInfo


# --- SQLite and MongoDB specifics -----------------------------------------------------------------


def test_sqlite_index_table_and_purge(tmp_path: Path) -> None:
    """SQLite keeps the index in <table>_users (WITHOUT ROWID), and purge() deletes rows of gone sessions."""
    path = tmp_path / "sessions.db"
    store = SqliteStore(path, table="app_sessions")
    try:
        user = new_user()
        kept, _ = saved_sync(store, user)
        gone, _ = saved_sync(store, user)
        store.delete(gone)
        with contextlib.closing(sqlite3.connect(path)) as connection:
            schema = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'app_sessions_users'").fetchone()
            assert "WITHOUT ROWID" in schema[0]
            assert count_rows(connection) == 2
            store.purge()
            assert connection.execute("SELECT sid FROM app_sessions_users").fetchall() == [(kept,)]
    finally:
        store.close()


def saved_sync(store: SqliteStore, user: str) -> tuple[str, Record]:
    """Save and index a new session on a sync store."""
    sid, record = new_sid(), live(idle=ACTIVE)
    store.save(sid, record)
    store.index_user(user, sid, record.expires)
    return sid, record


def count_rows(connection: sqlite3.Connection) -> int:
    """The number of rows in the index table."""
    return int(connection.execute("SELECT count(*) FROM app_sessions_users").fetchone()[0])


@pytest.mark.server
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_mongo_index_commands_and_indexes(mongo_server: Any, flavour: str) -> None:
    """MongoDB: index_user is an update, user_sessions a find, revoke_user a find and a delete; user is indexed."""
    counter = CommandCounter()
    async with make_mongo_store(flavour, "user_index_rt", event_listeners=[counter]) as store:
        adapted: Any = adapt(store)
        user = new_user()
        sid, record = new_sid(), live(idle=ACTIVE)
        await adapted.save(sid, record)
        assert counter.take() == ["createIndexes", "update"]
        await adapted.index_user(user, sid, record.expires)
        assert counter.take() == ["update"]
        assert await adapted.user_sessions(user) == [info(sid, record)]
        assert counter.take() == ["find"]
        assert await adapted.revoke_user(user) == [sid]
        assert counter.take() == ["find", "delete"]
        indexes = store.collection.list_indexes()
        if flavour == "async":
            indexes = await indexes
            specs = [spec async for spec in indexes]
        else:
            specs = list(indexes)
    (user_index,) = [spec for spec in specs if dict(spec["key"]) == {"user": 1}]
    assert user_index["sparse"] is True


# --- Redis: round trips ---------------------------------------------------------------------------


INDEX_OPERATIONS = ("index_user", "user_sessions", "revoke_user", "delete")


async def _measure(
    observer: redis.Redis, sent: list[bytes], operations: dict[str, Callable[[], Awaitable[object]]]
) -> dict[str, tuple[int, dict[str, int]]]:
    observed = {}
    for name, operation in operations.items():
        before = command_calls(observer)
        sent.clear()
        await operation()
        observed[name] = (len(sent), delta(before, command_calls(observer)))
    return observed


def _check_round_trips(observed: dict[str, tuple[int, dict[str, int]]]) -> None:
    assert {name: count for name, (count, _) in observed.items()} == dict.fromkeys(INDEX_OPERATIONS, 1)
    for name in ("index_user", "user_sessions", "revoke_user"):
        stats = observed[name][1]
        assert stats["evalsha"] == 1, (name, stats)
        assert "eval" not in stats
    assert observed["revoke_user"][1]["publish"] == 2  # from inside the script: one per live session
    assert observed["delete"][1] == {"del": 1, "publish": 1}


@pytest.mark.server
async def test_redis_round_trips_of_the_index_sync() -> None:
    """index_user, user_sessions and revoke_user are one EVALSHA each, delete one pipelined DEL + PUBLISH."""
    with RedisServer() as server, server.client() as observer:
        pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, connection_class=CountingConnection)
        client = redis.Redis.from_pool(pool)
        store = RedisStore(client, prefix="rt:")
        try:
            record = live(idle=ACTIVE)
            for sid in ("warm", "a", "b", "c"):
                store.save(sid, record)
            # Warm up: the connection, and the first EVAL of each script.
            store.index_user("warm-user", "warm", record.expires)
            store.user_sessions("warm-user")
            store.revoke_user("warm-user")
            store.index_user("u", "a", record.expires)

            async def index() -> None:
                store.index_user("u", "b", record.expires)

            async def listing() -> None:
                assert [entry.sid for entry in store.user_sessions("u")] == ["a", "b"]

            async def revoke() -> None:
                assert store.revoke_user("u") == ["a", "b"]

            async def delete() -> None:
                store.delete("c")

            observed = await _measure(
                observer,
                CountingConnection.sent,
                {"index_user": index, "user_sessions": listing, "revoke_user": revoke, "delete": delete},
            )
        finally:
            client.close()
    _check_round_trips(observed)


@pytest.mark.server
async def test_redis_round_trips_of_the_index_async() -> None:
    """The async store also needs one round trip per index_user, user_sessions, revoke_user and delete."""
    with RedisServer() as server, server.client() as observer:
        pool = redis.asyncio.ConnectionPool(
            host="127.0.0.1", port=server.port, connection_class=AsyncCountingConnection
        )
        client = redis.asyncio.Redis.from_pool(pool)
        store = AsyncRedisStore(client, prefix="rt:")
        try:
            record = live(idle=ACTIVE)
            for sid in ("warm", "a", "b", "c"):
                await store.save(sid, record)
            await store.index_user("warm-user", "warm", record.expires)
            await store.user_sessions("warm-user")
            await store.revoke_user("warm-user")
            await store.index_user("u", "a", record.expires)

            async def listing() -> None:
                assert [entry.sid for entry in await store.user_sessions("u")] == ["a", "b"]

            async def revoke() -> None:
                assert await store.revoke_user("u") == ["a", "b"]

            observed = await _measure(
                observer,
                AsyncCountingConnection.sent,
                {
                    "index_user": lambda: store.index_user("u", "b", record.expires),
                    "user_sessions": listing,
                    "revoke_user": revoke,
                    "delete": lambda: store.delete("c"),
                },
            )
        finally:
            await client.aclose()
    _check_round_trips(observed)


@pytest.mark.server
def test_redis_index_key_layout_and_ttl(redis_server: RedisServer) -> None:
    """The index is a set at prefix + 'user:' + user with the TTL of its longest session, named by the session."""
    prefix = unique_prefix("user_index_layout")
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        with redis_server.client() as raw:
            short, long_ = live(ttl=100.0, idle=ACTIVE), live(ttl=1000.0, idle=ACTIVE)
            store.save("s1", short)
            store.save("s2", long_)
            store.index_user("42", "s1", short.expires)
            assert raw.smembers(f"{prefix}user:42") == {b"s1"}
            assert 99_000 < raw.pttl(f"{prefix}user:42") <= 100_100
            store.index_user("42", "s2", long_.expires)
            assert raw.smembers(f"{prefix}user:42") == {b"s1", b"s2"}
            assert 999_000 < raw.pttl(f"{prefix}user:42") <= 1_000_100
            assert raw.hget(f"{prefix}s1", "index") == f"{prefix}user:42".encode()
            assert store.touch("s1", time.time() + 5000) is True  # extends the index too
            assert 4_999_000 < raw.pttl(f"{prefix}user:42") <= 5_000_100
            loaded = store.load("s1")  # the 'index' field is not session data
            assert loaded is not None
            assert loaded.data == {"n": 1}
            assert store.revoke_user("42") == ["s1", "s2"]
            assert raw.exists(f"{prefix}user:42", f"{prefix}s1", f"{prefix}s2") == 0
    finally:
        store.close()


# --- Redis: revocations reach other processes -----------------------------------------------------


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``predicate`` until it holds, failing after :data:`DEADLINE` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {DEADLINE}s")
        await asyncio.sleep(0.02)


async def subscribers(url: str, channel: str) -> int:
    """How many connections are subscribed to ``channel`` on the server at ``url``."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        ((_, count),) = await client.pubsub_numsub(channel)
        return int(count)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def watching(store: AsyncRedisStore) -> AsyncIterator[asyncio.Queue[str]]:
    """Run ``store.watch_revocations()`` in a task feeding a queue; cancel it on exit."""
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def watch() -> None:
        async for sid in store.watch_revocations():
            queue.put_nowait(sid)

    task = asyncio.create_task(watch())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def received(queue: asyncio.Queue[str], count: int) -> list[str]:
    """The next ``count`` ids from ``queue``, failing after :data:`DEADLINE` seconds."""
    return [await asyncio.wait_for(queue.get(), DEADLINE) for _ in range(count)]


@pytest.mark.server
@pytest.mark.parametrize("publisher_flavour", ["sync", "async"])
async def test_revocations_reach_a_watcher_on_another_client(redis_server: RedisServer, publisher_flavour: str) -> None:
    """delete and revoke_user on one client are seen by watch_revocations() of another store and client."""
    prefix = unique_prefix("revocations")
    channel = prefix + "revoked"
    watcher = AsyncRedisStore.from_url(redis_server.url, prefix=prefix)
    publisher: RedisStore | AsyncRedisStore
    if publisher_flavour == "sync":
        publisher = RedisStore.from_url(redis_server.url, prefix=prefix)
    else:
        publisher = AsyncRedisStore.from_url(redis_server.url, prefix=prefix)
    adapted: Any = adapt(publisher)
    try:
        assert isinstance(watcher, RevocationFeed)
        async with watching(watcher) as queue:
            await wait_for(
                lambda: _has_subscriber(redis_server.url, channel), "the watcher did not subscribe to the channel"
            )
            user = new_user()
            logged_out, _ = await saved(adapted, user)
            await adapted.delete(logged_out)
            assert await received(queue, 1) == [logged_out]
            revoked = sorted([(await saved(adapted, user))[0] for _ in range(2)])
            await saved(adapted, new_user())  # another user's session is not announced
            assert await adapted.revoke_user(user) == revoked
            assert sorted(await received(queue, 2)) == revoked
            assert queue.empty()
        await wait_for(lambda: _has_no_subscriber(redis_server.url, channel), "cancelling did not unsubscribe")
    finally:
        await adapted.close()
        await watcher.close()


async def _has_subscriber(url: str, channel: str) -> bool:
    return await subscribers(url, channel) >= 1


async def _has_no_subscriber(url: str, channel: str) -> bool:
    return await subscribers(url, channel) == 0


@pytest.mark.server
async def test_revocations_in_a_cluster(redis_servers: RedisServers) -> None:
    """In a cluster, a revoke and a delete by a sync store reach an async store's watcher (regular pub/sub)."""
    async with (
        make_redis_store("async", "cluster", "revocations") as watcher,
        make_redis_store("sync", "cluster", "revocations") as other,
    ):
        assert isinstance(watcher, AsyncRedisStore)
        assert isinstance(other, RedisStore)
        publisher = RedisStore(other.client, prefix=watcher.prefix)  # the same keys, another client
        adapted: Any = adapt(publisher)
        channel = watcher.prefix + "revoked"
        node_url = redis_servers.cluster().url
        async with watching(watcher) as queue:
            # A PUBLISH on any node reaches every node's subscribers: probe until one arrives.
            probe = redis.Redis.from_url(node_url)
            try:
                deadline = time.monotonic() + DEADLINE
                while queue.empty():
                    assert time.monotonic() < deadline, "the watcher did not subscribe in time"
                    probe.publish(channel, "probe")
                    await asyncio.sleep(0.05)
            finally:
                probe.close()
            while not queue.empty():
                assert queue.get_nowait() == "probe"
            user = new_user()
            logged_out, _ = await saved(adapted, user)
            sids = sorted([(await saved(adapted, user))[0] for _ in range(3)])
            await adapted.delete(logged_out)
            assert await adapted.revoke_user(user) == sids
            got = await received(queue, 4)
            while "probe" in got:  # a probe still in flight
                got.remove("probe")
                got += await received(queue, 1)
            assert sorted(got) == sorted([logged_out, *sids])


@pytest.mark.server
async def test_watcher_resubscribes_after_a_server_restart(caplog: pytest.LogCaptureFixture) -> None:
    """watch_revocations() survives the server being killed and restarted, and yields ids published afterwards."""
    caplog.set_level("WARNING", logger="persession")
    with RedisServer() as server:
        watcher = AsyncRedisStore.from_url(server.url, prefix="restart:")
        publisher = RedisStore.from_url(server.url, prefix="restart:")
        try:
            async with watching(watcher) as queue:
                await wait_for(lambda: _has_subscriber(server.url, "restart:revoked"), "the watcher did not subscribe")
                server.kill()
                await asyncio.sleep(0.3)  # the watcher notices while the server is down
                server.start()
                deadline = time.monotonic() + DEADLINE
                while queue.empty():  # ids published before it resubscribed are lost: publish until one arrives
                    assert time.monotonic() < deadline, "the watcher did not resubscribe in time"
                    publisher.delete("after-restart")
                    await asyncio.sleep(0.05)
                assert queue.get_nowait() == "after-restart"
            assert any("revocation feed: Redis unreachable" in record.getMessage() for record in caplog.records)
        finally:
            publisher.close()
            await watcher.close()
