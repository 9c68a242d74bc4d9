"""Redis-only behaviour of the Redis stores, against real servers (the shared contract is in test_contract.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import pickle
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot

from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisCluster,
    RedisSentinel,
    RedisServer,
    RedisServers,
    make_redis_store,
    redis_cluster_fixture,
    redis_sentinel_fixture,
    redis_server_fixture,
    redis_servers_fixture,
    unique_prefix,
)
from _stores import (
    HOUR,
    AsyncCountingConnection,
    CountingConnection,
    command_calls,
    delta,
    live,
    new_sid,
    own_address,
    own_mux,
    own_pool,
)
from persession.exceptions import ConfigError, NotSerializable, StoreError, StoreUnavailable
from persession.records import Change, Record
from persession.stores import store_from_url
from persession.stores.redis import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_PREFIX,
    DEFAULT_RETRIES,
    DEFAULT_SOCKET_TIMEOUT,
    AsyncRedisStore,
    RedisStore,
    _own,
)

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client to the shared server, for looking at keys behind the store's back."""
    with redis_server.client() as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return unique_prefix("test_redis")


@pytest.fixture
def store(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    """A sync store on the shared server, built from its URL."""
    opened = RedisStore.from_url(redis_server.url, prefix=prefix)
    yield opened
    opened.close()


@pytest.fixture
async def astore(redis_server: RedisServer, prefix: str) -> AsyncIterator[AsyncRedisStore]:
    """An async store on the shared server, built from its URL."""
    opened = AsyncRedisStore.from_url(redis_server.url, prefix=prefix)
    yield opened
    await opened.close()


# --- key layout, prefix, TTL ----------------------------------------------------------------------


def test_one_hash_per_session_under_the_prefix(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """A session is one hash at prefix + id: '.'-prefixed JSON fields plus created/accessed/expires."""
    sid = new_sid()
    record = live({"user": 42, "cart": [1, "a"], "created": "mine", "": None, ".x": True})
    store.save(sid, record)
    assert list(raw.scan_iter(match=f"{prefix}*")) == [f"{prefix}{sid}".encode()]
    assert raw.type(prefix + sid) == b"hash"
    assert raw.hgetall(prefix + sid) == {
        b"created": repr(record.created).encode(),
        b"accessed": repr(record.accessed).encode(),
        b"expires": repr(record.expires).encode(),
        b".user": b"42",
        b".cart": b'[1,"a"]',
        b".created": b'"mine"',
        b".": b"null",
        b"..x": b"true",
    }
    assert store.load(sid) == record


def test_default_prefix_is_persession(redis_server: RedisServer, raw: redis.Redis) -> None:
    """Without a prefix option the key is 'persession:' + id."""
    sid = new_sid()
    with redis_server.client() as client:
        store = RedisStore(client)
        assert store.prefix == DEFAULT_PREFIX == "persession:"
        store.save(sid, live({"a": 1}))
        try:
            assert raw.exists(f"persession:{sid}") == 1
        finally:
            store.delete(sid)
    assert raw.exists(f"persession:{sid}") == 0


def test_pttl_follows_expires(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """The key's PTTL matches the record's expires after save, merge and touch."""
    sid = new_sid()
    key = prefix + sid

    def ttl_matches(expires: float) -> bool:
        pttl = raw.pttl(key)
        wanted = (expires - time.time()) * 1000
        # The key is written a round trip after the store computes its TTL, so allow a little over.
        return wanted - 1000 <= pttl <= wanted + 100

    record = live({"a": 1}, ttl=HOUR)
    store.save(sid, record)
    assert ttl_matches(record.expires)
    later = time.time() + 2 * HOUR
    assert store.merge(sid, Change({"b": 2}), later) is True
    assert ttl_matches(later)
    sooner = time.time() + 600
    assert store.touch(sid, sooner) is True
    assert ttl_matches(sooner)


@pytest.mark.parametrize("ttl", [pytest.param(-10.0, id="past"), pytest.param(0.0, id="now")])
def test_expiry_already_past_leaves_no_key(store: RedisStore, raw: redis.Redis, prefix: str, ttl: float) -> None:
    """Saving a record whose expiry is not in the future writes no key, and removes the replaced one."""
    old, sid = new_sid(), new_sid()
    store.save(old, live({"a": 1}))
    now = time.time()
    store.save(sid, Record({"a": 1}, created=now, accessed=now, expires=now + ttl), replaces=old)
    assert raw.exists(prefix + sid) == 0
    assert raw.exists(prefix + old) == 0
    assert store.load(sid) is None


def test_merge_and_touch_to_a_past_expiry_remove_the_key(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """A merge or touch that moves expires into the past leaves no live key."""
    first, second = new_sid(), new_sid()
    store.save(first, live({"a": 1}))
    store.save(second, live({"a": 1}))
    assert store.merge(first, Change({"b": 2}), time.time() - 1) is True
    assert store.touch(second, time.time() - 1) is True
    assert raw.exists(prefix + first, prefix + second) == 0


def test_merge_and_touch_on_missing_key_create_nothing(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """Merge and touch on an id with no key return False and leave no key behind."""
    sid = new_sid()
    assert store.merge(sid, Change({"user": 42}), time.time() + HOUR) is False
    assert store.touch(sid, time.time() + HOUR) is False
    assert raw.exists(prefix + sid) == 0


def test_save_with_replaces_removes_the_old_key(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """Regenerating (save with replaces=) leaves only the new key."""
    old, new = new_sid(), new_sid()
    store.save(old, live({"user": 42}))
    record = live({"user": 42, "rotated": True})
    store.save(new, record, replaces=old)
    assert raw.exists(prefix + old) == 0
    assert raw.exists(prefix + new) == 1
    assert store.load(new) == record


def test_merge_cleared_keeps_created_and_drops_every_field(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """A cleared merge removes every old field but keeps the metadata."""
    sid = new_sid()
    record = live({"a": 1, "b": 2})
    store.save(sid, record)
    assert store.merge(sid, Change({"c": 3}, cleared=True), record.expires) is True
    fields = raw.hgetall(prefix + sid)
    assert set(fields) == {b"created", b"accessed", b"expires", b".c"}
    assert fields[b"created"] == repr(record.created).encode()


def test_refused_values_write_nothing(store: RedisStore, raw: redis.Redis, prefix: str) -> None:
    """A key or value that cannot be UTF-8 JSON raises NotSerializable before anything is written."""
    sid = new_sid()
    with pytest.raises(NotSerializable):
        store.save(sid, live({"\ud800": 1}))
    with pytest.raises(NotSerializable):
        store.save(sid, live({"ok": "\udfff"}))
    assert raw.exists(prefix + sid) == 0


def test_client_with_decoded_responses_works(redis_server: RedisServer, prefix: str) -> None:
    """A client created with decode_responses=True is served as well as a bytes client."""
    sid = new_sid()
    with redis_server.client(decode_responses=True) as client:
        store = RedisStore(client, prefix=prefix)
        record = live({"name": "héllo ✓", "n": [1, 2]})
        store.save(sid, record)
        assert store.load(sid) == record
        assert store.merge(sid, Change({"more": True}), record.expires) is True
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.data == {**record.data, "more": True}


# --- concurrency ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_200_concurrent_async_merges_keep_every_key(astore: AsyncRedisStore) -> None:
    """Two hundred concurrent merges of distinct keys on one session (asyncio.gather) leave all 200 keys."""
    sid = new_sid()
    await astore.save(sid, live({}))
    expires = time.time() + HOUR
    results = await asyncio.gather(*(astore.merge(sid, Change({f"k{i}": i}), expires) for i in range(200)))
    assert results == [True] * 200
    loaded = await astore.load(sid)
    assert loaded is not None
    assert loaded.data == {f"k{i}": i for i in range(200)}


def test_200_concurrent_threaded_merges_keep_every_key(store: RedisStore) -> None:
    """Two hundred merges of distinct keys on one session from 20 threads leave all 200 keys."""
    sid = new_sid()
    store.save(sid, live({}))
    expires = time.time() + HOUR
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: store.merge(sid, Change({f"k{i}": i}), expires), range(200)))
    assert results == [True] * 200
    loaded = store.load(sid)
    assert loaded is not None
    assert loaded.data == {f"k{i}": i for i in range(200)}


@pytest.mark.anyio
async def test_merge_racing_delete_never_resurrects(astore: AsyncRedisStore, raw: redis.Redis, prefix: str) -> None:
    """Merges racing a delete either land before it or return False; the key ends up gone."""
    sid = new_sid()
    await astore.save(sid, live({"user": 1}))
    expires = time.time() + HOUR
    merges = [astore.merge(sid, Change({f"k{i}": i}), expires) for i in range(50)]
    outcomes = await asyncio.gather(*merges[:25], astore.delete(sid), *merges[25:])
    assert all(isinstance(outcome, bool) for i, outcome in enumerate(outcomes) if i != 25)
    assert raw.exists(prefix + sid) == 0
    assert await astore.load(sid) is None


# --- round trips ----------------------------------------------------------------------------------


def test_round_trips_per_operation_sync() -> None:
    """Load, merge, touch, save and delete are one round trip each (client count and server commandstats)."""
    with RedisServer() as server, server.client() as observer:
        pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, connection_class=CountingConnection)
        client = redis.Redis.from_pool(pool)
        store = RedisStore(client, prefix="rt:")
        expires = time.time() + HOUR
        # Warm up: connection handshake, and the first EVAL of each script.
        store.save("s", live({"a": 1}))
        store.merge("s", Change({"b": 2}), expires)
        store.touch("s", expires)
        observed: dict[str, tuple[int, dict[str, int]]] = {}
        operations = {
            "load": lambda: store.load("s"),
            "merge": lambda: store.merge("s", Change({"c": 3}, deleted=frozenset({"a"})), expires),
            "touch": lambda: store.touch("s", expires),
            "save": lambda: store.save("t", live({"x": 1}), replaces="s"),
            "delete": lambda: store.delete("t"),
        }
        for name, operation in operations.items():
            before = command_calls(observer)
            CountingConnection.sent.clear()
            operation()
            observed[name] = (len(CountingConnection.sent), delta(before, command_calls(observer)))
        client.close()
    assert {name: count for name, (count, _) in observed.items()} == dict.fromkeys(operations, 1)
    assert observed["load"][1] == {"hgetall": 1}
    assert observed["merge"][1]["evalsha"] == 1
    assert observed["touch"][1]["evalsha"] == 1
    assert observed["save"][1]["evalsha"] == 1
    # A logout also tells other processes (their live websockets close), in the same round trip.
    assert observed["delete"][1] == {"del": 1, "publish": 1}
    assert all("eval" not in stats for _, stats in observed.values())


@pytest.mark.anyio
async def test_round_trips_per_operation_async() -> None:
    """The async store also needs one round trip per load, merge, touch, save and delete."""
    with RedisServer() as server, server.client() as observer:
        pool = redis.asyncio.ConnectionPool(
            host="127.0.0.1", port=server.port, connection_class=AsyncCountingConnection
        )
        client = redis.asyncio.Redis.from_pool(pool)
        store = AsyncRedisStore(client, prefix="rt:")
        expires = time.time() + HOUR
        await store.save("s", live({"a": 1}))
        await store.merge("s", Change({"b": 2}), expires)
        await store.touch("s", expires)
        counts = {}
        stats = {}
        for name in ("load", "merge", "touch", "save", "delete"):
            before = command_calls(observer)
            AsyncCountingConnection.sent.clear()
            if name == "load":
                assert await store.load("s") is not None
            elif name == "merge":
                assert await store.merge("s", Change({"c": 3}), expires) is True
            elif name == "touch":
                assert await store.touch("s", expires) is True
            elif name == "save":
                await store.save("t", live({"x": 1}), replaces="s")
            else:
                await store.delete("t")
            counts[name] = len(AsyncCountingConnection.sent)
            stats[name] = delta(before, command_calls(observer))
        await client.aclose()
    assert counts == {"load": 1, "merge": 1, "touch": 1, "save": 1, "delete": 1}
    assert stats["load"] == {"hgetall": 1}
    assert stats["merge"]["evalsha"] == stats["touch"]["evalsha"] == stats["save"]["evalsha"] == 1


def test_scripts_reload_after_script_flush(store: RedisStore, raw: redis.Redis) -> None:
    """After SCRIPT FLUSH (or a fresh server) the store falls back to EVAL and keeps working."""
    sid = new_sid()
    store.save(sid, live({"a": 1}))
    raw.script_flush()
    assert store.merge(sid, Change({"b": 2}), time.time() + HOUR) is True
    loaded = store.load(sid)
    assert loaded is not None
    assert loaded.data == {"a": 1, "b": 2}


# --- malformed records ----------------------------------------------------------------------------


def _times() -> dict[str, str]:
    now = time.time()
    return {"created": repr(now), "accessed": repr(now), "expires": repr(now + HOUR)}


MALFORMED = {
    "field is not JSON": lambda: {**_times(), ".user": "{not json"},
    "field is a bare NaN": lambda: {**_times(), ".user": "NaN"},
    "field is not UTF-8": lambda: {**_times(), ".user": b"\xff\xfe"},
    "no metadata": lambda: {".user": "42"},
    "no expires": lambda: {k: v for k, v in _times().items() if k != "expires"} | {".user": "42"},
    "expires not a number": lambda: {**_times(), "expires": "soon"},
}


@pytest.mark.parametrize("fields", [pytest.param(make, id=name) for name, make in MALFORMED.items()])
def test_malformed_hash_loads_as_none_with_one_warning(
    store: RedisStore, raw: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture, fields: Any
) -> None:
    """A hash written by hand with a bad field or without metadata loads as None, with one security warning."""
    sid = new_sid()
    raw.hset(prefix + sid, mapping=fields())
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert store.load(sid) is None
    warnings = [r for r in caplog.records if r.name == "persession.security" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert sid not in warnings[0].getMessage()


@pytest.mark.anyio
async def test_key_of_another_type_loads_as_none_with_a_warning(
    astore: AsyncRedisStore, raw: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A string where a session hash should be loads as None with a warning; merging into it is a StoreError."""
    sid = new_sid()
    raw.set(prefix + sid, '{"user": 42}')
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert await astore.load(sid) is None
    assert [r.levelno for r in caplog.records if r.name == "persession.security"] == [logging.WARNING]
    with pytest.raises(StoreError) as caught:
        await astore.merge(sid, Change({"a": 1}), time.time() + HOUR)
    assert not isinstance(caught.value, StoreUnavailable)
    assert isinstance(caught.value.original_error, redis.ResponseError)
    assert caught.value.__cause__ is caught.value.original_error


class _Trap:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_pickled_bytes_are_never_unpickled(
    store: RedisStore, raw: redis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pickle planted in a field makes load return None and is never unpickled."""
    sid = new_sid()
    trap = tmp_path / "unpickled"
    payload = pickle.dumps(_Trap(trap))
    raw.hset(prefix + sid, mapping={**_times(), ".user": payload})
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert store.load(sid) is None
    assert not trap.exists()
    assert any(r.name == "persession.security" for r in caplog.records)
    # The same bytes as a whole-record pickle (another library's format) are ignored too.
    raw.delete(prefix + sid)
    raw.hset(prefix + sid, mapping={**_times(), ".user": "1", "pickle": payload})
    loaded = store.load(sid)
    assert loaded is not None
    assert loaded.data == {"user": 1}
    assert not trap.exists()


# --- outages --------------------------------------------------------------------------------------


def test_outage_raises_store_unavailable_then_recovers_sync() -> None:
    """With the server killed every verb raises StoreUnavailable at once; restarted, the same store works."""
    sid = new_sid()
    with RedisServer() as server:
        store = RedisStore.from_url(server.url, prefix="outage:")
        store.save(sid, live({"a": 1}))
        server.kill()
        verbs = {
            "load": lambda: store.load(sid),
            "save": lambda: store.save(sid, live({"a": 2})),
            "merge": lambda: store.merge(sid, Change({"b": 1}), time.time() + HOUR),
            "touch": lambda: store.touch(sid, time.time() + HOUR),
            "delete": lambda: store.delete(sid),
        }
        for verb in verbs.values():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                verb()
            assert time.monotonic() - started < DEFAULT_SOCKET_TIMEOUT
            assert isinstance(caught.value.original_error, redis.ConnectionError)
            assert caught.value.__cause__ is caught.value.original_error
        server.start()  # same port, empty (nothing persisted)
        assert store.load(sid) is None
        record = live({"back": True})
        store.save(sid, record)
        assert store.load(sid) == record
        store.close()


@pytest.mark.anyio
async def test_outage_raises_store_unavailable_then_recovers_async() -> None:
    """The async store raises StoreUnavailable while the server is down and works again once it is back."""
    sid = new_sid()
    with RedisServer() as server:
        store = AsyncRedisStore.from_url(server.url, prefix="outage:")
        await store.save(sid, live({"a": 1}))
        server.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load(sid)
        with pytest.raises(StoreUnavailable):
            await store.merge(sid, Change({"b": 1}), time.time() + HOUR)
        assert time.monotonic() - started < DEFAULT_SOCKET_TIMEOUT
        server.start()
        record = live({"back": True})
        await store.save(sid, record)
        assert await store.load(sid) == record
        await store.close()


def test_hung_server_times_out_within_the_socket_timeout() -> None:
    """A server that stops answering (SIGSTOP) gives StoreUnavailable after about the socket timeout."""
    timeout = 0.3
    with RedisServer() as server:
        store = RedisStore.from_url(server.url, prefix="hung:", socket_timeout=timeout, socket_connect_timeout=timeout)
        sid = new_sid()
        store.save(sid, live({"a": 1}))
        os.kill(server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                store.load(sid)
            elapsed = time.monotonic() - started
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert timeout <= elapsed < (1 + DEFAULT_RETRIES) * timeout + 0.5
        assert isinstance(caught.value.original_error, redis.TimeoutError)
        assert store.load(sid) is not None
        store.close()


# --- cluster --------------------------------------------------------------------------------------


def _sids_in_different_slots(prefix: str) -> tuple[str, str]:
    """Two ids whose keys hash to slots served by different masters (0-5460 and 10923-16383)."""
    first = next(s for s in (new_sid() for _ in range(1000)) if key_slot(f"{prefix}{s}".encode()) < 5461)
    second = next(s for s in (new_sid() for _ in range(1000)) if key_slot(f"{prefix}{s}".encode()) > 10922)
    return first, second


def test_cluster_sync_save_load_merge_regenerate(redis_cluster: RedisCluster) -> None:
    """Through a RedisCluster client: save, load, merge, touch, regenerate across slots, and delete."""
    prefix = unique_prefix("cluster")
    with redis_cluster.client() as client:
        store = RedisStore(client, prefix=prefix)
        old, new = _sids_in_different_slots(prefix)
        record = live({"user": 42})
        store.save(old, record)
        assert store.load(old) == record
        assert store.merge(old, Change({"cart": [1]}), record.expires) is True
        assert store.touch(old, record.expires + 60) is True
        rotated = live({"user": 42, "cart": [1]})
        store.save(new, rotated, replaces=old)
        assert client.exists(prefix + old) == 0
        assert client.exists(prefix + new) == 1
        assert store.load(new) == rotated
        assert store.merge(old, Change({"x": 1}), record.expires) is False
        store.delete(new)
        assert store.load(new) is None
        store.close()
        assert client.ping() is True  # the store leaves a client it did not create open


@pytest.mark.anyio
async def test_cluster_async_save_load_merge_regenerate(redis_cluster: RedisCluster) -> None:
    """Through an asyncio RedisCluster client: save, load, concurrent merges, regenerate across slots."""
    prefix = unique_prefix("cluster")
    client = redis_cluster.async_client()
    try:
        store = AsyncRedisStore(client, prefix=prefix)
        old, new = _sids_in_different_slots(prefix)
        await store.save(old, live({"user": 42}))
        expires = time.time() + HOUR
        results = await asyncio.gather(*(store.merge(old, Change({f"k{i}": i}), expires) for i in range(50)))
        assert all(results)
        loaded = await store.load(old)
        assert loaded is not None
        assert loaded.data == {"user": 42, **{f"k{i}": i for i in range(50)}}
        await store.save(new, live(loaded.data), replaces=old)
        assert await client.exists(prefix + old) == 0
        assert await store.load(old) is None
        moved = await store.load(new)
        assert moved is not None
        assert moved.data == loaded.data
        await store.delete(new)
    finally:
        await client.aclose()


def test_cluster_hash_tag_prefix_keeps_sessions_in_one_slot(redis_cluster: RedisCluster) -> None:
    """A prefix with a hash tag puts old and new ids in one slot, and regenerate still removes the old key."""
    prefix = "{" + unique_prefix("tagged") + "}"
    with redis_cluster.client() as client:
        store = RedisStore(client, prefix=prefix)
        old, new = new_sid(), new_sid()
        assert client.keyslot(prefix + old) == client.keyslot(prefix + new)
        store.save(old, live({"a": 1}))
        store.save(new, live({"a": 1}), replaces=old)
        assert client.exists(prefix + old) == 0
        assert store.load(new) is not None
        store.delete(new)


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_make_redis_store_cluster_factory(flavour: Any, redis_servers: RedisServers) -> None:
    """The cluster factory yields a working store of the requested flavour."""
    async with make_redis_store(flavour, "cluster", "factory", servers=redis_servers) as store:
        sid = new_sid()
        record = live({"k": "v"})
        if isinstance(store, AsyncRedisStore):
            await store.save(sid, record)
            assert await store.load(sid) == record
        else:
            store.save(sid, record)
            assert store.load(sid) == record


# --- sentinel -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sentinel_url_through_store_from_url(redis_sentinel: RedisSentinel) -> None:
    """A redis+sentinel:// URL gives a store on the master the sentinel names, and an async twin."""
    prefix = unique_prefix("sentinel")
    store = store_from_url(redis_sentinel.url, prefix=prefix)
    assert isinstance(store, RedisStore)
    sid = new_sid()
    record = live({"user": 7})
    store.save(sid, record)
    assert store.load(sid) == record
    twin = store.to_async()
    assert await twin.merge(sid, Change({"via": "async"}), record.expires) is True
    assert await twin.touch(sid, record.expires) is True
    loaded = store.load(sid)
    assert loaded is not None
    assert loaded.data == {"user": 7, "via": "async"}
    await twin.delete(sid)
    assert store.load(sid) is None
    await twin.close()
    store.close()


def test_sentinel_master_for_client(redis_sentinel: RedisSentinel) -> None:
    """A client from Sentinel.master_for() works as a RedisStore client."""
    sentinel = redis.sentinel.Sentinel(redis_sentinel.sentinels, socket_timeout=2)
    client = sentinel.master_for(redis_sentinel.service, socket_timeout=2)
    try:
        store = RedisStore(client, prefix=unique_prefix("sentinel"))
        sid = new_sid()
        store.save(sid, live({"a": 1}))
        assert store.merge(sid, Change({"b": 2}), time.time() + HOUR) is True
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.data == {"a": 1, "b": 2}
        store.delete(sid)
    finally:
        client.close()
        for sentinel_client in sentinel.sentinels:
            sentinel_client.close()


@pytest.mark.anyio
async def test_async_sentinel_master_for_client(redis_sentinel: RedisSentinel) -> None:
    """A client from the asyncio Sentinel.master_for() works as an AsyncRedisStore client."""
    sentinel = redis.asyncio.sentinel.Sentinel(redis_sentinel.sentinels, socket_timeout=2)
    client = sentinel.master_for(redis_sentinel.service, socket_timeout=2)
    try:
        store = AsyncRedisStore(client, prefix=unique_prefix("sentinel"))
        sid = new_sid()
        record = live({"a": 1})
        await store.save(sid, record)
        assert await store.load(sid) == record
        await store.delete(sid)
    finally:
        await client.aclose()
        for sentinel_client in sentinel.sentinels:
            await sentinel_client.aclose()


# --- URLs -----------------------------------------------------------------------------------------


def test_redis_url_through_store_from_url(redis_server: RedisServer, prefix: str) -> None:
    """store_from_url('redis://...') builds a working RedisStore on its own connections, with bounded timeouts."""
    store = store_from_url(redis_server.url, prefix=prefix)
    assert isinstance(store, RedisStore)
    try:
        sid = new_sid()
        store.save(sid, live({"a": 1}))
        assert store.load(sid) is not None
        assert store.client is None  # persession's own RESP connections, not a redis-py client
        assert isinstance(own_pool(store), _own.SyncPool)
        address = own_address(store)
        url = urlsplit(redis_server.url)  # the shared server, or PERSESSION_REDIS_URL's
        assert (address.host, address.port, address.path) == (url.hostname, url.port or 6379, None)
        assert address.db == int(url.path.strip("/") or 0)
        assert address.ssl_context is None
        assert (address.username, address.password, address.client_name) == (None, None, None)
        assert address.socket_timeout == DEFAULT_SOCKET_TIMEOUT == 2.0
        assert address.connect_timeout == DEFAULT_CONNECT_TIMEOUT == 2.0
        assert address.retries == DEFAULT_RETRIES
        assert address.max_connections == DEFAULT_MAX_CONNECTIONS
        assert address.pool_timeout == DEFAULT_POOL_TIMEOUT
        store.delete(sid)
    finally:
        store.close()


def test_url_query_overrides_the_timeouts(redis_server: RedisServer) -> None:
    """Options in the URL's query win over the defaults, keywords over the query; the store still works."""
    query = "socket_timeout=0.5&socket_connect_timeout=0.25&retries=3&max_connections=7&pool_timeout=0.75"
    store = RedisStore.from_url(f"{redis_server.url}?{query}", socket_connect_timeout=0.125, prefix=unique_prefix())
    try:
        assert store.client is None
        address = own_address(store)
        assert (address.socket_timeout, address.connect_timeout) == (0.5, 0.125)
        assert (address.retries, address.max_connections, address.pool_timeout) == (3, 7, 0.75)
        assert store.load(new_sid()) is None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        pytest.param("redis://cache.example.org:6379/0?health_check_interval=5", {}, id="query"),
        pytest.param("redis://cache.example.org:6379/0", {"health_check_interval": 5}, id="keyword"),
        pytest.param("unix:///run/redis.sock?health_check_interval=5", {}, id="unix-query"),
    ],
)
def test_unknown_redis_option_is_a_config_error_naming_it(url: str, options: dict[str, Any]) -> None:
    """An option the lean client does not know raises ConfigError naming it, for both flavours."""
    with pytest.raises(ConfigError) as caught:
        RedisStore.from_url(url, **options)
    assert caught.value.option == "health_check_interval"
    assert "health_check_interval" in str(caught.value)
    with pytest.raises(ConfigError) as async_caught:
        AsyncRedisStore.from_url(url, **options)
    assert async_caught.value.option == "health_check_interval"


@pytest.mark.anyio
async def test_rediss_url_builds_a_tls_client_without_connecting() -> None:
    """A rediss:// URL builds TLS connections (sync and async twin) for the named host, port, db and password."""
    store = store_from_url("rediss://:s3cret@cache.example.org:6380/3", prefix="tls:", client_name="tls-test")
    assert isinstance(store, RedisStore)
    assert store.client is None
    address = own_address(store)
    assert (address.host, address.port, address.db, address.username, address.password, address.path) == (
        "cache.example.org",
        6380,
        3,
        None,
        "s3cret",
        None,
    )
    assert isinstance(address.ssl_context, ssl.SSLContext)
    assert address.ssl_context.verify_mode == ssl.CERT_REQUIRED  # verified by default, hostname included
    assert address.ssl_context.check_hostname is True
    assert (address.socket_timeout, address.connect_timeout) == (2.0, 2.0)
    assert address.client_name == "tls-test"
    twin = store.to_async()
    assert twin.client is None
    assert isinstance(own_mux(twin), _own.AsyncMux)
    twin_address = own_address(twin)
    assert isinstance(twin_address.ssl_context, ssl.SSLContext)
    assert twin_address.ssl_context.verify_mode == ssl.CERT_REQUIRED
    # The twin has the same URL and keyword options (its TLS context is a new one).
    assert dataclasses.replace(twin_address, ssl_context=None) == dataclasses.replace(address, ssl_context=None)
    assert twin.prefix == "tls:"
    await twin.close()
    store.close()


def test_rediss_url_can_turn_certificate_checks_off() -> None:
    """rediss://...?ssl_cert_reqs=none (a self-signed test server) verifies neither certificate nor hostname."""
    store = RedisStore.from_url("rediss://cache.example.org/0?ssl_cert_reqs=none")
    try:
        context = own_address(store).ssl_context
        assert context is not None
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    finally:
        store.close()


@pytest.mark.anyio
async def test_to_async_twin_keeps_query_and_keyword_options(redis_server: RedisServer) -> None:
    """The asyncio twin of a URL store gets the same query and keyword options, and reaches the same server."""
    name = f"persession-twin-{uuid.uuid4().hex[:8]}"
    prefix = unique_prefix("twin")
    server = redis_server.url.rpartition("/")[0]  # redis://host:port, without the database
    store = RedisStore.from_url(f"{server}/0?socket_timeout=0.75&db=5", prefix=prefix, client_name=name)
    twin = store.to_async()
    try:
        assert twin.client is None
        assert own_address(twin) == own_address(store)
        assert (own_address(twin).socket_timeout, own_address(twin).db) == (0.75, 5)
        sid = new_sid()
        await twin.save(sid, live({"from": "twin"}))
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.data == {"from": "twin"}
        with redis.Redis.from_url(f"{server}/5", socket_timeout=5) as db5:
            assert db5.exists(f"{prefix}{sid}") == 1
            names = [c.get("name") for c in db5.client_list()]
        assert names.count(name) == 2  # the sync pool's connection and the twin's
        await twin.delete(sid)
    finally:
        await twin.close()
        store.close()


def test_unix_socket_url_really_connects(tmp_path: Path) -> None:
    """A unix:// URL reaches a redis-server listening on a unix socket, in the database its ?db= names."""
    socket_path = tmp_path / "redis.sock"
    with RedisServer(unixsocket=socket_path) as server:
        store = store_from_url(f"unix://{socket_path}?db=2", prefix="unix:")
        assert isinstance(store, RedisStore)
        try:
            assert store.client is None
            address = own_address(store)
            assert (address.path, address.host, address.db) == (str(socket_path), None, 2)
            sid = new_sid()
            record = live({"over": "unix"})
            store.save(sid, record)
            assert store.load(sid) == record
            with redis.Redis("127.0.0.1", server.port, db=2) as tcp:
                assert tcp.exists(f"unix:{sid}") == 1
                assert any(
                    c.get("addr", "").startswith("/") or c.get("laddr", "").startswith("/") for c in tcp.client_list()
                )
        finally:
            store.close()


def test_sentinel_url_is_parsed_without_connecting() -> None:
    """A redis+sentinel URL names the sentinels, service, db and master password; nothing connects yet."""
    store = RedisStore.from_url("redis+sentinel://:pw@10.0.0.1:26380,sentinel-b/mymaster/4")
    assert isinstance(store.client, redis.Redis)
    pool = store.client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_timeout"] == 2.0
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"]) for s in sentinels
    ]
    assert addresses == [("10.0.0.1", 26380), ("sentinel-b", 26379)]
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 2.0 for s in sentinels)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis:///0",
        "redis://:password@/0",
        "rediss://",
        "unix://",
        "redis+sentinel://",
        "redis+sentinel:///mymaster",
        "redis+sentinel://host:26379",
        "redis+sentinel://host:26379/",
        "redis+sentinel://host:notaport/mymaster",
        "redis+sentinel://host:26379/mymaster/notadb",
        "redis+sentinel://host:26379/mymaster?socket_timeout=1",
        "redis://host:99999/0",
    ],
)
def test_urls_without_host_or_service_are_config_errors(url: str) -> None:
    """A URL naming no host (or sentinel service), or a malformed one, raises ConfigError naming 'url'."""
    with pytest.raises(ConfigError) as caught:
        store_from_url(url)
    assert caught.value.option == "url"


def test_config_errors_for_wrong_clients_and_prefix(redis_server: RedisServer) -> None:
    """Mismatched client flavours, a non-str prefix and to_async() on an injected client raise ConfigError."""
    with redis_server.client() as client:
        with pytest.raises(ConfigError) as wrong_flavour:
            AsyncRedisStore(client)
        assert wrong_flavour.value.option == "client"
        with pytest.raises(ConfigError) as bad_prefix:
            RedisStore(client, prefix=b"bytes:")  # type: ignore[arg-type]
        assert bad_prefix.value.option == "prefix"
        with pytest.raises(ConfigError, match="AsyncRedisStore"):
            RedisStore(client).to_async()
    async_client = redis.asyncio.Redis.from_url(redis_server.url)
    with pytest.raises(ConfigError) as wrong_sync:
        RedisStore(async_client)  # type: ignore[arg-type]
    assert wrong_sync.value.option == "client"
    asyncio.run(async_client.aclose())


def test_close_closes_only_clients_the_store_built(redis_server: RedisServer, raw: redis.Redis) -> None:
    """close() disconnects a client built by from_url, and leaves a client passed in usable."""
    name = f"persession-close-{uuid.uuid4().hex[:8]}"
    owned = RedisStore.from_url(redis_server.url, client_name=name)
    assert owned.client is None
    assert own_address(owned).client_name == name
    assert owned.load(new_sid()) is None

    def connected() -> int:
        return sum(1 for c in raw.client_list() if c.get("name") == name)

    assert connected() == 1
    owned.close()
    deadline = time.monotonic() + 5
    while connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connected() == 0
    with redis_server.client() as client:
        RedisStore(client).close()
        assert client.ping() is True


# --- imports --------------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)


def test_importing_stores_does_not_import_redis() -> None:
    """`import persession.stores` leaves redis unimported; RedisStore is loaded on first access."""
    result = _python(
        "import sys, persession, persession.stores as stores\n"
        "assert 'redis' not in sys.modules, 'imported too early'\n"
        "assert stores.RedisStore.__name__ == 'RedisStore' and stores.AsyncRedisStore\n"
        "assert 'redis' in sys.modules\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_redis_gives_install_hint() -> None:
    """Without redis-py installed, a redis:// URL raises ConfigError telling how to install it."""
    result = _python(
        "import sys; sys.modules['redis'] = None\n"
        "from persession.stores import store_from_url\n"
        "from persession.exceptions import ConfigError, MissingExtra\n"
        "try:\n    store_from_url('redis://cache:6379/0')\n"
        "except ImportError as error:\n"
        "    assert isinstance(error, ConfigError) and isinstance(error, MissingExtra), type(error)\n"
        "    print(error, error.extra)\n"
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "persession-web[redis]"' in result.stdout
    assert result.stdout.split()[-1] == "redis"


def test_ttl_rounding_never_shortens_the_record() -> None:
    """The Redis TTL for an expiry is rounded up to whole milliseconds and never negative."""
    from persession.stores.redis._ops import _ttl_ms

    assert _ttl_ms(10.0001, 10.0) == 1
    assert _ttl_ms(10.0, 10.0) == 0
    assert _ttl_ms(5.0, 10.0) == 0
    assert _ttl_ms(3610.5, 10.0) == math.ceil(3600.5 * 1000)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(redis.exceptions.ConnectionError("refused"), StoreUnavailable, id="ConnectionError"),
        pytest.param(redis.exceptions.TimeoutError("timed out"), StoreUnavailable, id="TimeoutError"),
        pytest.param(redis.exceptions.BusyLoadingError("loading"), StoreUnavailable, id="BusyLoadingError"),
        pytest.param(redis.exceptions.ClusterDownError("CLUSTERDOWN"), StoreUnavailable, id="ClusterDownError"),
        pytest.param(redis.exceptions.TryAgainError("TRYAGAIN"), StoreUnavailable, id="TryAgainError"),
        pytest.param(redis.exceptions.ReadOnlyError("READONLY"), StoreUnavailable, id="ReadOnlyError"),
        pytest.param(redis.exceptions.RedisClusterException("no node"), StoreUnavailable, id="RedisClusterException"),
        pytest.param(redis.sentinel.MasterNotFoundError("no master"), StoreUnavailable, id="MasterNotFoundError"),
        pytest.param(redis.exceptions.AuthenticationError("bad password"), StoreError, id="AuthenticationError"),
        pytest.param(redis.exceptions.ResponseError("ERR syntax"), StoreError, id="ResponseError"),
        pytest.param(redis.exceptions.OutOfMemoryError("OOM"), StoreError, id="OutOfMemoryError"),
    ],
)
def test_driver_errors_are_translated_in_one_place(error: Exception, expected: type[StoreError]) -> None:
    """Connection-class driver errors become StoreUnavailable, the rest StoreError, chained to the original."""
    from persession.stores.redis._errors import _map_errors

    with pytest.raises(StoreError) as caught, _map_errors:
        raise error
    assert type(caught.value) is expected
    assert caught.value.original_error is error
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "error", [ValueError("not the driver's"), KeyboardInterrupt()], ids=["ValueError", "KeyboardInterrupt"]
)
def test_other_errors_pass_through_the_translation_untouched(error: BaseException) -> None:
    """Only the driver's errors are translated: anything else leaves the block as it was raised."""
    from persession.stores.redis._errors import _map_errors

    with pytest.raises(type(error)) as caught, _map_errors:
        raise error
    assert caught.value is error


@pytest.mark.parametrize("connections", ["own", "redis-py"])
def test_a_fresh_server_never_answers_noscript(connections: str) -> None:
    """The layout's scripts are loaded when a connection opens (own) or before the first script (redis-py).

    So the first login and the first write on a fresh server are one EVALSHA each, with no NOSCRIPT and no EVAL.
    """
    with RedisServer() as server, server.client() as observer:
        store = RedisStore.from_url(server.url) if connections == "own" else RedisStore(server.client())
        try:
            before = command_calls(observer)
            store.save("s", live({"a": 1}))
            assert store.merge("s", Change({"b": 2}), time.time() + HOUR) is True
            stats = delta(before, command_calls(observer))
            errors = observer.info("errorstats")
        finally:
            store.close()
            if store.client is not None:
                store.client.close()
    assert stats["evalsha"] == 2
    assert "eval" not in stats
    assert "errorstat_NOSCRIPT" not in errors
    assert stats["script|load"] >= 2


# --- clients passed in: what redis-py options change, the store must not --------------------------

CLIENT_OPTIONS = {
    "resp2": {},
    "resp3": {"protocol": 3},
    "decoded": {"decode_responses": True},
    "resp3-decoded": {"protocol": 3, "decode_responses": True},
}


def _every_verb_sync(store: RedisStore, user: str = "alice") -> list[Any]:
    sid, other = new_sid(), new_sid()
    expires = time.time() + HOUR
    store.save(sid, live({"user": user, "n": 1}))
    store.index_user(user, sid, expires)
    store.save(other, live({"user": user}))
    store.index_user(user, other, expires)
    merged = store.merge(sid, Change({"n": 2, "é": ["ü"]}, deleted=frozenset({"user"})), expires)
    touched = store.touch(sid, expires)
    loaded = store.load(sid)
    rolled = store.load_touch(sid, 600.0, None)
    listed = sorted(info.sid for info in store.user_sessions(user))
    store.delete(other)
    revoked = store.revoke_user(user)
    return [
        merged,
        touched,
        loaded and loaded.data,
        rolled and rolled.data,
        listed == sorted([sid, other]),
        revoked == [sid],
        store.load(sid),
    ]


EVERY_VERB = [True, True, {"n": 2, "é": ["ü"]}, {"n": 2, "é": ["ü"]}, True, True, None]


@pytest.mark.parametrize("options", list(CLIENT_OPTIONS.values()), ids=list(CLIENT_OPTIONS))
def test_every_verb_on_a_client_passed_in_whatever_its_protocol_and_decoding(
    redis_server: RedisServer, prefix: str, options: dict[str, Any]
) -> None:
    """RESP3 maps and decoded str replies come back through the same decoders as RESP2 bytes."""
    client = redis_server.client(**options)
    try:
        assert _every_verb_sync(RedisStore(client, prefix=prefix)) == EVERY_VERB
    finally:
        client.close()


@pytest.mark.anyio
@pytest.mark.parametrize("options", list(CLIENT_OPTIONS.values()), ids=list(CLIENT_OPTIONS))
async def test_every_verb_on_an_asyncio_client_passed_in_whatever_its_protocol_and_decoding(
    redis_server: RedisServer, prefix: str, options: dict[str, Any]
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5, **options)
    store = AsyncRedisStore(client, prefix=prefix)
    try:
        sid = new_sid()
        expires = time.time() + HOUR
        await store.save(sid, live({"user": "alice", "n": 1}))
        await store.index_user("alice", sid, expires)
        assert await store.merge(sid, Change({"n": 2}, deleted=frozenset({"user"})), expires) is True
        loaded = await store.load(sid)
        assert loaded is not None
        assert loaded.data == {"n": 2}
        assert [info.sid for info in await store.user_sessions("alice")] == [sid]
        assert await store.revoke_user("alice") == [sid]
        assert await store.load(sid) is None
    finally:
        await client.aclose()


def test_a_single_connection_client_keeps_its_one_connection(redis_server: RedisServer, prefix: str) -> None:
    """``single_connection_client=True`` is served by redis-py's own path (its lock), and works."""
    client = redis_server.client(single_connection_client=True)
    try:
        store = RedisStore(client, prefix=prefix)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda n: _every_verb_sync(store, f"user{n}"), range(4)))
        assert results == [EVERY_VERB] * 4
    finally:
        client.close()


def _move_slot(cluster: RedisCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` and its keys from node ``source`` to node ``target`` (as redis-cli --cluster reshard does)."""
    clients = [node.client() for node in cluster.nodes]
    try:
        ids = [client.execute_command("CLUSTER", "MYID") for client in clients]
        ids = [node_id.decode() if isinstance(node_id, bytes) else node_id for node_id in ids]
        clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        keys = clients[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            port = cluster.nodes[target].port
            clients[source].execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
        for client in clients:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for client in clients:
            client.close()


def _slot_owner(cluster: RedisCluster, slot: int) -> int:
    for index, node in enumerate(cluster.nodes):
        with node.client() as client:
            for first, last, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last and int(_[0][1]) == node.port:
                    return index
    raise AssertionError(f"no node owns slot {slot}")


def test_a_cluster_store_follows_a_slot_that_moved(redis_cluster: RedisCluster) -> None:
    """The direct path asks the node its slot map names; a MOVED answer sends the op through redis-py's routing."""
    prefix = unique_prefix("moved")
    with redis_cluster.client() as client:
        store = RedisStore(client, prefix=prefix)
        sid = new_sid()
        store.save(sid, live({"a": 1}))
        assert store.load(sid) is not None  # the client's slot map is now loaded, and about to be stale
        slot = key_slot((prefix + sid).encode())
        source = _slot_owner(redis_cluster, slot)
        target = (source + 1) % len(redis_cluster.nodes)
        _move_slot(redis_cluster, slot, source, target)
        try:
            loaded = store.load(sid)
            assert loaded is not None
            assert loaded.data == {"a": 1}
            assert store.merge(sid, Change({"b": 2}), time.time() + HOUR) is True
            merged = store.load(sid)
            assert merged is not None
            assert merged.data == {"a": 1, "b": 2}
            assert _slot_owner(redis_cluster, slot) == target
        finally:
            store.delete(sid)
            _move_slot(redis_cluster, slot, target, source)


@pytest.mark.anyio
@pytest.mark.parametrize("connections", ["own", "redis-py"])
async def test_a_fresh_server_never_answers_noscript_async(connections: str) -> None:
    """As :func:`test_a_fresh_server_never_answers_noscript`, for the asyncio store."""
    with RedisServer() as server, server.client() as observer:
        client = None if connections == "own" else redis.asyncio.Redis.from_url(server.url, socket_timeout=5)
        store = AsyncRedisStore.from_url(server.url) if client is None else AsyncRedisStore(client)
        try:
            before = command_calls(observer)
            await store.save("s", live({"a": 1}))
            assert await store.merge("s", Change({"b": 2}), time.time() + HOUR) is True
            stats = delta(before, command_calls(observer))
            errors = observer.info("errorstats")
        finally:
            await store.close()
            if client is not None:
                await client.aclose()
    assert stats["evalsha"] == 2
    assert "eval" not in stats
    assert "errorstat_NOSCRIPT" not in errors
    assert stats["script|load"] >= 2


# --- an asyncio client passed in: the connections the store borrows from its pool ---------------


def _in_use(client: redis.asyncio.Redis) -> int:
    return len(client.connection_pool._in_use_connections)


@pytest.mark.anyio
async def test_connections_borrowed_from_an_asyncio_pool_go_back_on_close(
    redis_server: RedisServer, prefix: str
) -> None:
    """At most as many as ran at once, kept between ops, given back by ``close()``; the client stays usable."""
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5)
    store = AsyncRedisStore(client, prefix=prefix)
    try:
        sid = new_sid()
        await store.save(sid, live({"a": 1}))
        loads = await asyncio.gather(*(store.load(sid) for _ in range(20)))
        assert all(loaded is not None and loaded.data == {"a": 1} for loaded in loads)
        assert 1 <= _in_use(client) <= 20
        borrowed = _in_use(client)
        for _ in range(10):  # one at a time: no new connection is borrowed
            assert await store.load(sid) is not None
        assert _in_use(client) == borrowed
        await store.close()
        assert _in_use(client) == 0
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_an_asyncio_client_store_moves_to_a_new_event_loop(redis_server: RedisServer, prefix: str) -> None:
    """Used from a second loop, the store gives the first loop's connections back (disconnected) and borrows anew."""
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5)
    store = AsyncRedisStore(client, prefix=prefix)
    sid = new_sid()
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first.run_until_complete(store.save(sid, live({"a": 1})))
        assert _in_use(client) == 1
        loaded = second.run_until_complete(store.load(sid))
        assert loaded is not None
        assert loaded.data == {"a": 1}
        assert _in_use(client) == 1  # the first loop's was given back
        second.run_until_complete(store.close())
        assert _in_use(client) == 0
        second.run_until_complete(client.aclose())
    finally:
        first.run_until_complete(asyncio.sleep(0))  # the first loop closes what was its socket
        first.close()
        second.close()


@pytest.mark.anyio
@pytest.mark.parametrize("retries", [0, 1])
async def test_a_borrowed_connection_that_failed_follows_the_clients_retry_policy(
    redis_server: RedisServer, prefix: str, retries: int
) -> None:
    """A borrowed connection the server closed (CLIENT KILL): retried as the client says, and reconnected after."""
    client = redis.asyncio.Redis.from_url(
        redis_server.url, socket_timeout=5, retry=redis.asyncio.retry.Retry(NoBackoff(), retries)
    )
    store = AsyncRedisStore(client, prefix=prefix)
    try:
        sid = new_sid()
        await store.save(sid, live({"a": 1}))
        with redis_server.client() as admin:
            assert admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
        if retries:
            loaded = await store.load(sid)
        else:
            with pytest.raises(StoreUnavailable):
                await store.load(sid)
            loaded = await store.load(sid)  # the connection was disconnected: it reconnects
        assert loaded is not None
        assert loaded.data == {"a": 1}
    finally:
        await store.close()
        await client.aclose()


@pytest.mark.anyio
async def test_an_asyncio_cluster_store_follows_a_slot_that_moved(redis_cluster: RedisCluster) -> None:
    """As :func:`test_a_cluster_store_follows_a_slot_that_moved`, for the asyncio cluster client."""
    prefix = unique_prefix("amoved")
    client = redis_cluster.async_client()
    store = AsyncRedisStore(client, prefix=prefix)
    sid = new_sid()
    slot = key_slot((prefix + sid).encode())
    source = _slot_owner(redis_cluster, slot)
    target = (source + 1) % len(redis_cluster.nodes)
    try:
        await store.save(sid, live({"a": 1}))
        assert await store.load(sid) is not None
        _move_slot(redis_cluster, slot, source, target)
        try:
            loaded = await store.load(sid)
            assert loaded is not None
            assert loaded.data == {"a": 1}
            assert await store.merge(sid, Change({"b": 2}), time.time() + HOUR) is True
            merged = await store.load(sid)
            assert merged is not None
            assert merged.data == {"a": 1, "b": 2}
        finally:
            await store.delete(sid)
            _move_slot(redis_cluster, slot, target, source)
    finally:
        await client.aclose()


CLIENT_KINDS = {
    "lean": {},
    "single-connection": {"single_connection_client": True},  # redis-py's execute_command path
}


@pytest.mark.parametrize("options", list(CLIENT_KINDS.values()), ids=list(CLIENT_KINDS))
def test_a_client_passed_in_survives_script_flush_and_reads_a_non_hash_as_malformed(
    redis_server: RedisServer, prefix: str, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_server.client(**options)
    try:
        store = RedisStore(client, prefix=prefix)
        sid, planted = new_sid(), new_sid()
        store.save(sid, live({"a": 1}))
        client.script_flush()
        assert store.merge(sid, Change({"b": 2}), time.time() + HOUR) is True  # NOSCRIPT, then EVAL
        loaded = store.load(sid)
        assert loaded is not None
        assert loaded.data == {"a": 1, "b": 2}
        client.set(prefix + planted, "not a hash")
        with caplog.at_level(logging.WARNING, logger="persession.security"):
            assert store.load(planted) is None
        assert "the key is not a hash" in caplog.text
        assert planted not in caplog.text
    finally:
        client.close()


@pytest.mark.anyio
async def test_an_asyncio_client_passed_in_survives_script_flush_and_reads_a_non_hash_as_malformed(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5)
    store = AsyncRedisStore(client, prefix=prefix)
    try:
        sid, planted = new_sid(), new_sid()
        await store.save(sid, live({"a": 1}))
        await client.script_flush()
        assert await store.merge(sid, Change({"b": 2}), time.time() + HOUR) is True
        loaded = await store.load(sid)
        assert loaded is not None
        assert loaded.data == {"a": 1, "b": 2}
        await client.set(prefix + planted, "not a hash")
        with caplog.at_level(logging.WARNING, logger="persession.security"):
            assert await store.load(planted) is None
        assert "the key is not a hash" in caplog.text
    finally:
        await store.close()
        await client.aclose()
