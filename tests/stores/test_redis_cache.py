"""Client-side caching of the synchronous Redis store (``RedisStore.from_url(url, client_cache=N)``).

Against a real redis-server. "Another process" is another store built from
the same URL (its own connections, so Redis sees another client), a plain
redis-py client, or a forked child. Round trips are counted from the
server's ``INFO commandstats``; nothing here sleeps to let an invalidation
arrive, but a test that changes and loads in one thread waits until the
invalidation connection is readable (see :func:`invalidation_arrived`).
The contract suite runs on this store too (``redis-cached-sync``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import warnings
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisServer,
    invalidation_arrived,
    key_prefix_fixture,
    raw_client_fixture,
    redis_server_fixture,
    redis_servers_fixture,
    unique_prefix,
)
from _stores import command_calls, own_pool
from persession.exceptions import ConfigError
from persession.records import Change, Record
from persession.stores.redis import AsyncRedisStore, RedisStore

pytestmark = pytest.mark.server

NOW = time.time()
DATA: dict[str, Any] = {"user": "alice", "roles": ["admin"], "visits": 0}


def record(data: dict[str, Any] | None = None) -> Record:
    now = time.time()
    return Record(dict(DATA if data is None else data), created=now, accessed=now, expires=now + 3600)


def hgetalls(client: redis.Redis) -> int:
    """How many HGETALL commands the server has run (scripts' included)."""
    return command_calls(client)["hgetall"]


@pytest.fixture(name="cached")
def cached_fixture(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    yield store
    store.close()


@pytest.fixture(name="other")
def other_fixture(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    """Another process's store: same server and prefix, connections of its own, no cache."""
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    yield store
    store.close()


def test_an_unchanged_cached_session_loads_without_a_round_trip(cached: RedisStore, raw: redis.Redis) -> None:
    """The first load reads Redis; the next ones, while nobody changes the session, do not."""
    cached.save("s1", record())
    before = hgetalls(raw)
    first = cached.load("s1")
    assert hgetalls(raw) == before + 1
    for _ in range(20):
        again = cached.load("s1")
        assert again is not None
        assert again.data == DATA
    assert first is not None
    assert first.data == DATA
    assert hgetalls(raw) == before + 1


@pytest.mark.parametrize("change", ["merge", "save", "delete", "touch", "raw HSET", "raw DEL", "raw EXPIRE"])
def test_a_change_made_elsewhere_is_seen_by_the_very_next_load(
    cached: RedisStore, other: RedisStore, raw: redis.Redis, prefix: str, change: str
) -> None:
    """Whatever another client does to a cached session, the next load after its invalidation arrived sees it."""
    for round_ in range(30):
        cached.save("s1", record({**DATA, "visits": round_}))
        loaded = cached.load("s1")
        assert loaded is not None
        assert loaded.data["visits"] == round_
        expected: dict[str, Any] | None
        if change == "merge":
            assert other.merge("s1", Change(set={"visits": -round_}), time.time() + 3600)
            expected = {**DATA, "visits": -round_}
        elif change == "save":
            other.save("s1", record({"user": "bob"}))
            expected = {"user": "bob"}
        elif change == "delete":
            other.delete("s1")
            expected = None
        elif change == "touch":
            assert other.touch("s1", time.time() + 60)
            expected = {**DATA, "visits": round_}
        elif change == "raw HSET":
            raw.hset(f"{prefix}s1", ".visits", "1000")
            expected = {**DATA, "visits": 1000}
        elif change == "raw DEL":
            raw.delete(f"{prefix}s1")
            expected = None
        else:
            raw.pexpire(f"{prefix}s1", 1)
            time.sleep(0.01)
            assert raw.exists(f"{prefix}s1") == 0  # expired: Redis deletes it on access
            expected = None
        invalidation_arrived(cached)
        seen = cached.load("s1")
        assert (None if seen is None else seen.data) == expected, round_
        if change == "touch":
            assert seen is not None
            assert seen.expires < time.time() + 120  # the touched expiry, not the cached one


def test_deleting_one_session_keeps_the_others_cached(cached: RedisStore, raw: redis.Redis) -> None:
    """A logout forgets its own session only: the others still load without a round trip."""
    for sid in ("s1", "s2"):
        cached.save(sid, record())
        cached.load(sid)
    cached.delete("s1")
    before = hgetalls(raw)
    assert cached.load("s2") is not None
    assert hgetalls(raw) == before
    assert cached.load("s1") is None


def test_our_own_merge_keeps_the_merged_session_cached(cached: RedisStore, raw: redis.Redis) -> None:
    """A merge reads the result back in its own round trip: the next load is a hit with the merged data."""
    cached.save("s1", record())
    assert cached.load("s1") is not None
    before = hgetalls(raw)
    for visits in range(1, 11):
        assert cached.merge("s1", Change(set={"visits": visits}), time.time() + 3600)
        loaded = cached.load("s1")
        assert loaded is not None
        assert loaded.data["visits"] == visits
    assert hgetalls(raw) == before + 10  # one per merge, in the merge's round trip; none for the loads


def test_a_merge_into_a_session_deleted_meanwhile_caches_nothing(cached: RedisStore, other: RedisStore) -> None:
    """The merge finds the session gone (False) and the next load says so."""
    cached.save("s1", record())
    assert cached.load("s1") is not None
    other.delete("s1")
    invalidation_arrived(cached)
    assert not cached.merge("s1", Change(set={"visits": 5}), time.time() + 3600)
    assert cached.load("s1") is None


def test_loaded_data_is_a_fresh_copy_every_time(cached: RedisStore) -> None:
    """Changing a nested value of one load's data never shows in the next load (the cache keeps the reply)."""
    cached.save("s1", record())
    first = cached.load("s1")
    assert first is not None
    first.data["roles"].append("root")
    first.data["user"] = "mallory"
    second = cached.load("s1")
    assert second is not None
    assert second.data == DATA


def test_losing_the_invalidation_connection_empties_the_cache(
    cached: RedisStore, other: RedisStore, raw: redis.Redis
) -> None:
    """Invalidations may be missed while their connection is down: the cache starts over, nothing stale is served."""
    cached.save("s1", record())
    assert cached.load("s1") is not None
    killed = raw.client_kill_filter(_type="pubsub")
    assert killed >= 1
    other.merge("s1", Change(set={"visits": 7}), time.time() + 3600)  # no invalidation can reach the cache
    loaded = cached.load("s1")
    assert loaded is not None
    assert loaded.data["visits"] == 7
    # And caching works again, on the new connection.
    before = hgetalls(raw)
    assert cached.load("s1") is not None
    assert hgetalls(raw) == before
    other.merge("s1", Change(set={"visits": 8}), time.time() + 3600)
    invalidation_arrived(cached)
    reloaded = cached.load("s1")
    assert reloaded is not None
    assert reloaded.data["visits"] == 8


def test_a_flushed_database_is_seen(redis_server: RedisServer) -> None:
    """FLUSHDB invalidates every key at once (a nil invalidation): the next load reads Redis again."""
    url = urlunsplit(urlsplit(redis_server.url)._replace(path="/9"))  # a database of its own, flushed below
    scratch = RedisStore.from_url(url, prefix=unique_prefix("flush"), client_cache=10)
    try:
        scratch.save("s1", record())
        assert scratch.load("s1") is not None
        scratch_raw = redis.Redis.from_url(url)
        try:
            scratch_raw.flushdb()
        finally:
            scratch_raw.close()
        invalidation_arrived(scratch)
        assert scratch.load("s1") is None
    finally:
        scratch.close()


def test_the_cache_keeps_at_most_its_size(redis_server: RedisServer, prefix: str, raw: redis.Redis) -> None:
    """client_cache=2: a third session pushes out the least recently used one."""
    store = RedisStore.from_url(redis_server.url, prefix=prefix, client_cache=2)
    try:
        for sid in ("a", "b", "c"):
            store.save(sid, record())
        for sid in ("a", "b"):
            store.load(sid)
        store.load("a")  # "a" is now the most recently used
        before = hgetalls(raw)
        store.load("c")  # pushes out "b"
        store.load("a")
        assert hgetalls(raw) == before + 1
        store.load("b")
        assert hgetalls(raw) == before + 2
    finally:
        store.close()


def _child_loads(store: RedisStore, reply_to: Connection) -> None:
    warnings.simplefilter("ignore")  # see test_resp's fork test: a warning at the child's exit is no failure
    try:
        loaded = store.load("s1")
        reply_to.send(None if loaded is None else loaded.data)
    except BaseException as error:
        reply_to.send(repr(error))
    finally:
        reply_to.close()


def test_a_forked_child_starts_its_own_cache(cached: RedisStore, other: RedisStore) -> None:
    """The parent's cache and invalidation connection stay the parent's: a child reads Redis afresh."""
    cached.save("s1", record())
    assert cached.load("s1") is not None  # cached in the parent
    other.merge("s1", Change(set={"visits": 3}), time.time() + 3600)
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*fork.*", DeprecationWarning)
        child = context.Process(target=_child_loads, args=(cached, sending))
        child.start()
    sending.close()
    try:
        assert receiving.poll(10), "the child did not answer"
        seen = receiving.recv()
    finally:
        child.join(10)
        receiving.close()
    assert child.exitcode == 0
    assert seen == {**DATA, "visits": 3}
    parent = cached.load("s1")
    assert parent is not None
    assert parent.data == {**DATA, "visits": 3}


@pytest.mark.parametrize("size", [-1, True, 2.5, "10"])
def test_client_cache_must_be_a_count(redis_server: RedisServer, size: Any) -> None:
    """A negative, boolean, fractional or text size is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match="client_cache"):
        RedisStore.from_url(redis_server.url, client_cache=size)


def test_client_cache_needs_the_persession_layout(redis_server: RedisServer) -> None:
    """connect-redis records are loaded by a script: the cache refuses that layout."""
    with pytest.raises(ConfigError, match=r"client_cache.*layout"):
        RedisStore.from_url(redis_server.url, layout="connect-redis", client_cache=10)


def test_client_cache_needs_persessions_own_connections() -> None:
    """A Sentinel URL gets a redis-py client: the cache refuses it."""
    with pytest.raises(ConfigError, match="client_cache"):
        RedisStore.from_url("redis+sentinel://127.0.0.1:1/service", client_cache=10)


def test_a_reply_invalidated_while_in_flight_is_not_kept(
    cached: RedisStore, other: RedisStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change lands, and its invalidation is taken by another load, after our read ran but before we keep it.

    The read's reply is then already stale and no later invalidation will
    come: it must not be kept. (Between the reply and keeping it, another
    thread's load drains the invalidation; here the same thread does, inside
    the pool call.)
    """
    cached.save("s1", record())
    cached.save("s2", record())
    pool = own_pool(cached)
    receive = pool.receive
    raced = []

    def receive_then_race(sent: Any) -> Any:
        replies = receive(sent)
        if not raced and list(sent.commands[0][:2]) == ["HGETALL", f"{prefix}s1"]:
            raced.append(True)
            other.merge("s1", Change(set={"visits": 99}), time.time() + 3600)
            invalidation_arrived(cached)
            assert cached.load("s2") is not None  # drains the invalidation of s1
        return replies

    monkeypatch.setattr(pool, "receive", receive_then_race)
    stale = cached.load("s1")
    assert raced
    assert stale is not None
    assert stale.data["visits"] == 0  # what the read saw
    fresh = cached.load("s1")
    assert fresh is not None
    assert fresh.data["visits"] == 99


# -- the asyncio store -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_cached_loads_skip_the_round_trip_and_see_changes(
    redis_server: RedisServer, prefix: str, other: RedisStore, raw: redis.Redis
) -> None:
    """The asyncio twin: the first load opens the invalidation connection (not cached); then hits, then changes."""
    store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    try:
        await store.save("s1", record())
        assert await store.load("s1") is not None  # opens the invalidation connection: not kept
        assert await store.load("s1") is not None  # kept
        before = hgetalls(raw)
        for _ in range(10):
            loaded = await store.load("s1")
            assert loaded is not None
            assert loaded.data == DATA
        assert hgetalls(raw) == before
        for visits in range(1, 6):
            assert other.merge("s1", Change(set={"visits": visits}), time.time() + 3600)
            invalidation_arrived(store)
            seen = await store.load("s1")
            assert seen is not None
            assert seen.data["visits"] == visits
        other.delete("s1")
        invalidation_arrived(store)
        assert await store.load("s1") is None
    finally:
        await store.close()


@pytest.mark.anyio
async def test_async_own_merge_keeps_the_merged_session_cached(
    redis_server: RedisServer, prefix: str, raw: redis.Redis
) -> None:
    """A merge of the asyncio store reads the result back in its own round trip: later loads are hits."""
    store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    try:
        await store.save("s1", record())
        await store.load("s1")
        before = hgetalls(raw)
        for visits in range(1, 6):
            assert await store.merge("s1", Change(set={"visits": visits}), time.time() + 3600)
            loaded = await store.load("s1")
            assert loaded is not None
            assert loaded.data["visits"] == visits
        assert hgetalls(raw) == before + 5
    finally:
        await store.close()


@pytest.mark.anyio
async def test_async_losing_the_invalidation_connection_empties_the_cache(
    redis_server: RedisServer, prefix: str, other: RedisStore, raw: redis.Redis
) -> None:
    """As for the sync store: after the invalidation connection dies, nothing stale is served."""
    store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    try:
        await store.save("s1", record())
        await store.load("s1")
        await store.load("s1")
        assert raw.client_kill_filter(_type="pubsub") >= 1
        other.merge("s1", Change(set={"visits": 7}), time.time() + 3600)
        for _ in range(3):
            loaded = await store.load("s1")
            assert loaded is not None
            assert loaded.data["visits"] == 7
        other.merge("s1", Change(set={"visits": 8}), time.time() + 3600)
        invalidation_arrived(store)
        reloaded = await store.load("s1")
        assert reloaded is not None
        assert reloaded.data["visits"] == 8
    finally:
        await store.close()


@pytest.mark.anyio
async def test_async_concurrent_loads_while_the_invalidation_connection_opens(
    redis_server: RedisServer, prefix: str, other: RedisStore
) -> None:
    """Fifty loads at once on a cold cache: one opens the connection, the rest read Redis uncached, all correct."""
    store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    try:
        await store.save("s1", record())
        loads = await asyncio.gather(*(store.load("s1") for _ in range(50)))
        assert all(loaded is not None and loaded.data == DATA for loaded in loads)
        assert await store.load("s1") is not None  # cached (tracked) by now
        other.merge("s1", Change(set={"visits": 1}), time.time() + 3600)
        invalidation_arrived(store)
        seen = await store.load("s1")
        assert seen is not None
        assert seen.data["visits"] == 1
    finally:
        await store.close()


def test_revoking_a_user_forgets_their_cached_sessions(cached: RedisStore) -> None:
    """A revocation deletes sessions the script is not given as keys: the cache must not keep serving them."""
    cached.save("s1", record())
    cached.index_user("alice", "s1", time.time() + 3600)
    assert cached.load("s1") is not None
    assert cached.load("s1") is not None  # now from the cache
    assert cached.revoke_user("alice") == ["s1"]
    assert cached.load("s1") is None


@pytest.mark.anyio
async def test_revoking_a_user_forgets_their_cached_sessions_async(redis_server: RedisServer, prefix: str) -> None:
    store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    try:
        await store.save("s1", record())
        await store.index_user("alice", "s1", time.time() + 3600)
        for _ in range(3):  # the first loads open the invalidation connection; then it is cached
            assert await store.load("s1") is not None
        assert await store.revoke_user("alice") == ["s1"]
        assert await store.load("s1") is None
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_asyncio_twin_keeps_the_client_cache(cached: RedisStore, raw: redis.Redis) -> None:
    """``to_async()`` builds the twin with the same ``client_cache``: an unchanged session loads without Redis."""
    twin = cached.to_async()
    try:
        cached.save("s1", record())
        for _ in range(3):
            assert await twin.load("s1") is not None
        before = hgetalls(raw)
        for _ in range(5):
            loaded = await twin.load("s1")
            assert loaded is not None
            assert loaded.data == DATA
        assert hgetalls(raw) == before
    finally:
        await twin.close()
