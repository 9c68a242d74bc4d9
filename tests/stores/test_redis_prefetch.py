"""``RedisStore.prefetch`` and ``send_plan``: a load or a write sent now, its answer read later.

``PrefetchLoad`` and ``SplitWrite``.

Against a real redis-server. The WSGI middleware sends the load when the
request arrives and reads the answer at the session's first use; these tests
hold the store to what that needs: the same record as ``load`` /
``load_touch``, the answer of the moment the command was sent, one pooled
connection held until ``result()`` and always given back, errors as
:class:`~persession.StoreError` from ``result()``, and the client-side cache
kept right; and the same of writes (merge and touch; other plans are
carried out at once). ``tests/test_wsgi_prefetch.py`` covers the middleware.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisServer,
    busy_connections,
    dying_server_fixture,
    invalidation_arrived,
    key_prefix_fixture,
    raw_client_fixture,
    redis_server_fixture,
    redis_servers_fixture,
)
from _servers import free_port
from _stores import command_calls, idle_sockets, pending_reads
from persession.core import Action, Plan
from persession.exceptions import StoreError, StoreUnavailable
from persession.records import Change, Record
from persession.stores import PendingLoad, PendingWrite, PrefetchLoad, SplitWrite
from persession.stores.redis import RedisStore

pytestmark = pytest.mark.server

DATA: dict[str, Any] = {"user": "alice", "roles": ["admin"], "visits": 0}


def record(data: dict[str, Any] | None = None, ttl: float = 3600) -> Record:
    now = time.time()
    return Record(dict(DATA if data is None else data), created=now, accessed=now, expires=now + ttl)


@pytest.fixture(name="store")
def store_fixture(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    yield store
    store.close()


def test_every_redis_store_is_a_prefetch_load(store: RedisStore) -> None:
    assert isinstance(store, PrefetchLoad)
    pending = store.prefetch("absent")
    assert isinstance(pending, PendingLoad)
    assert pending.result() is None


def test_prefetch_returns_what_load_returns(store: RedisStore) -> None:
    store.save("s1", record())
    loaded = store.load("s1")
    assert loaded is not None
    got = store.prefetch("s1").result()
    assert got is not None
    assert (got.data, got.created, got.expires) == (loaded.data, loaded.created, loaded.expires)


def test_prefetch_with_refresh_moves_the_expiry_as_load_touch_does(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record(ttl=60))
    got = store.prefetch("s1", (3600.0, None)).result()
    assert got is not None
    assert got.data == DATA
    assert got.expires > time.time() + 3000
    assert raw.pttl(f"{store.prefix}s1") > 3_000_000
    assert store.prefetch("gone", (3600.0, None)).result() is None
    assert not raw.exists(f"{store.prefix}gone"), "a missing session must not be brought back"


def test_connection_is_held_until_result_and_given_back(store: RedisStore) -> None:
    store.save("s1", record())
    pending = store.prefetch("s1")
    assert busy_connections(store) == 1
    assert pending.result() is not None
    assert busy_connections(store) == 0


def test_the_answer_is_the_store_when_the_load_was_sent(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record())
    pending = store.prefetch("s1")
    raw.hset(f"{store.prefix}s1", ".user", '"mallory"')  # after the send, before the read
    got = pending.result()
    assert got is not None
    assert got.data["user"] == "alice"
    again = store.load("s1")
    assert again is not None
    assert again.data["user"] == "mallory"


def test_result_twice_reads_once_and_repeats_the_outcome(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record())
    before = command_calls(raw)["hgetall"]
    pending = store.prefetch("s1")
    first, second = pending.result(), pending.result()
    assert first is second
    assert command_calls(raw)["hgetall"] - before == 1


def test_a_key_of_another_type_is_a_missing_session_and_logged(
    store: RedisStore, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    raw.set(f"{store.prefix}s1", "not a hash")
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert store.prefetch("s1").result() is None
    assert "not a hash" in caplog.text
    assert busy_connections(store) == 0


def test_script_flushed_before_a_refreshing_prefetch_falls_back_to_eval(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record(ttl=60))
    raw.script_flush()
    got = store.prefetch("s1", (3600.0, None)).result()
    assert got is not None
    assert got.data == DATA
    assert raw.pttl(f"{store.prefix}s1") > 3_000_000


def test_a_killed_idle_connection_is_retried_on_a_fresh_one(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record())
    assert store.load("s1") is not None  # leaves one idle connection in the pool
    (idle,) = idle_sockets(store)
    host, port = idle.getsockname()[:2]
    assert raw.client_kill(f"{host}:{port}")
    got = store.prefetch("s1").result()
    assert got is not None
    assert got.data == DATA
    assert busy_connections(store) == 0


def test_server_gone_after_the_send_raises_from_result_and_frees_the_connection(
    dying: tuple[RedisServer, RedisStore],
) -> None:
    server, store = dying
    store.save("s1", record())
    with server.client() as control:
        control.client_pause(60_000)  # the load gets no answer before the crash
    pending = store.prefetch("s1")
    server.kill()
    with pytest.raises(StoreUnavailable) as raised:
        pending.result()
    assert busy_connections(store) == 0
    with pytest.raises(StoreUnavailable) as again:
        pending.result()
    assert again.value is raised.value


def test_server_down_at_the_send_raises_from_prefetch() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1.0)
    try:
        with pytest.raises(StoreUnavailable):
            store.prefetch("s1")
        assert busy_connections(store) == 0
    finally:
        store.close()


def test_stores_on_a_redis_py_client_load_at_once_and_raise_from_result(redis_server: RedisServer, prefix: str) -> None:
    client = redis_server.client()
    store = RedisStore(client, prefix=prefix)
    try:
        store.save("s1", record())
        pending = store.prefetch("s1")
        client.hset(f"{prefix}s1", ".user", '"mallory"')
        got = pending.result()
        assert got is not None
        assert got.data["user"] == "alice", "loaded when prefetch() was called"
    finally:
        client.close()
    dead = RedisStore(redis.Redis(port=free_port(), socket_connect_timeout=1.0), prefix=prefix)
    pending = dead.prefetch("s1")  # the failure waits for result(), as a sent load's would
    with pytest.raises(StoreError):
        pending.result()


def test_connect_redis_layout_prefetches_by_loading_at_once(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, layout="connect-redis")
    try:
        store.save("s1", record())
        got = store.prefetch("s1").result()
        assert got is not None
        assert got.data["user"] == "alice"
        refreshed = store.prefetch("s1", (3600.0, None)).result()
        assert refreshed is not None
        assert refreshed.expires > time.time() + 3000
        assert busy_connections(store) == 0
    finally:
        store.close()


# -- with client-side caching ---------------------------------------------------------------------


@pytest.fixture(name="cached")
def cached_fixture(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, client_cache=100)
    yield store
    store.close()


def test_cached_prefetch_sends_nothing_the_second_time(cached: RedisStore, raw: redis.Redis) -> None:
    cached.save("s1", record())
    assert cached.prefetch("s1").result() is not None  # read and kept
    before = command_calls(raw)["hgetall"]
    pending = cached.prefetch("s1")
    assert busy_connections(cached) == 0, "a cached session needs no connection"
    got = pending.result()
    assert got is not None
    assert got.data == DATA
    assert command_calls(raw)["hgetall"] == before


def test_a_change_while_the_answer_waits_is_seen_by_the_next_load(
    cached: RedisStore, redis_server: RedisServer, prefix: str
) -> None:
    other = RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        cached.save("s1", record())
        pending = cached.prefetch("s1")
        other.save("s1", record({"user": "bob"}))
        invalidation_arrived(cached)
        got = pending.result()
        assert got is not None
        assert got.data["user"] == "alice", "the answer of when the load was sent"
        again = cached.prefetch("s1").result()
        assert again is not None
        assert again.data["user"] == "bob"
    finally:
        other.close()


def test_refreshing_prefetch_does_not_keep_a_stale_entry(cached: RedisStore, raw: redis.Redis) -> None:
    cached.save("s1", record(ttl=60))
    assert cached.prefetch("s1").result() is not None  # cached
    refreshed = cached.prefetch("s1", (3600.0, None)).result()
    assert refreshed is not None
    before = command_calls(raw)["hgetall"]
    got = cached.prefetch("s1").result()
    assert got is not None
    assert got.expires == pytest.approx(refreshed.expires, abs=0.01)
    assert command_calls(raw)["hgetall"] == before + 1, "the refresh forgot the cached copy"


def test_a_failed_answer_leaves_no_pending_read_in_the_cache(prefix: str) -> None:
    with RedisServer() as server:
        store = RedisStore.from_url(server.url, prefix=prefix, client_cache=10, socket_connect_timeout=1.0)
        try:
            store.save("s1", record())
            assert store.load("s0") is None  # opens the invalidation connection and a tracking one
            with server.client() as control:
                control.client_pause(60_000)
            pending = store.prefetch("s1")
            server.kill()
            with pytest.raises(StoreUnavailable):
                pending.result()
            assert f"{prefix}s1" not in pending_reads(store)
            assert busy_connections(store) == 0
        finally:
            store.close()


# -- send_plan: a write sent now, its answer read later (SplitWrite) --------------------------------


def merge_plan(sid: str, change: Change, expires: float | None = None) -> Plan:
    return Plan(Action.MERGE, sid=sid, change=change, expires=expires or time.time() + 3600)


def test_every_redis_store_is_a_split_write(store: RedisStore) -> None:
    assert isinstance(store, SplitWrite)


def test_a_sent_merge_holds_a_connection_until_its_answer_is_read(store: RedisStore) -> None:
    store.save("s1", record())
    pending = store.send_plan(merge_plan("s1", Change(set={"visits": 7}, deleted=frozenset(["roles"]))))
    assert isinstance(pending, PendingWrite)
    assert busy_connections(store) == 1
    assert pending.result() is True, "the session was there"
    assert busy_connections(store) == 0
    got = store.load("s1")
    assert got is not None
    assert got.data == {"user": "alice", "visits": 7}


def test_a_sent_touch_moves_the_expiry(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record(ttl=60))
    pending = store.send_plan(Plan(Action.TOUCH, sid="s1", expires=time.time() + 3600))
    assert pending is not None
    pending.result()
    assert raw.pttl(f"{store.prefix}s1") > 3_000_000


@pytest.mark.parametrize("action", [Action.SAVE, Action.DELETE, Action.NOTHING])
def test_other_plans_are_carried_out_at_once(store: RedisStore, action: Action) -> None:
    store.save("s1", record())
    plan = {
        Action.SAVE: Plan(Action.SAVE, sid="s2", record=record({"user": "bob"})),
        Action.DELETE: Plan(Action.DELETE, sid="s1"),
        Action.NOTHING: Plan(),
    }[action]
    assert store.send_plan(plan) is None
    assert busy_connections(store) == 0
    if action is Action.SAVE:
        saved = store.load("s2")
        assert saved is not None
        assert saved.data == {"user": "bob"}
    elif action is Action.DELETE:
        assert store.load("s1") is None
    else:
        assert store.load("s1") is not None


def test_a_sent_merge_answered_twice_runs_once(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record())
    before = command_calls(raw)["evalsha"]
    pending = store.send_plan(merge_plan("s1", Change(set={"visits": 1})))
    assert pending is not None
    pending.result()
    pending.result()
    assert command_calls(raw)["evalsha"] - before == 1


def test_a_sent_merge_after_script_flush_falls_back_to_eval(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record())
    raw.script_flush()
    pending = store.send_plan(merge_plan("s1", Change(set={"visits": 2})))
    assert pending is not None
    pending.result()
    got = store.load("s1")
    assert got is not None
    assert got.data["visits"] == 2


def test_a_sent_merge_never_brings_a_deleted_session_back(store: RedisStore, raw: redis.Redis) -> None:
    store.save("s1", record())
    store.delete("s1")
    pending = store.send_plan(merge_plan("s1", Change(set={"visits": 2})))
    assert pending is not None
    assert pending.result() is False, "the session was gone"
    assert not raw.exists(f"{store.prefix}s1")


def test_server_gone_with_the_write_unanswered_raises_from_result(dying: tuple[RedisServer, RedisStore]) -> None:
    server, store = dying
    store.save("s1", record())
    with server.client() as control:
        control.client_pause(60_000)
    pending = store.send_plan(merge_plan("s1", Change(set={"visits": 2})))
    assert pending is not None
    server.kill()
    with pytest.raises(StoreUnavailable) as raised:
        pending.result()
    with pytest.raises(StoreUnavailable) as again:
        pending.result()
    assert again.value is raised.value
    assert busy_connections(store) == 0


def test_stores_that_cannot_split_carry_the_write_out_at_once(redis_server: RedisServer, prefix: str) -> None:
    client = redis_server.client()
    connect = RedisStore.from_url(redis_server.url, prefix=prefix, layout="connect-redis")
    try:
        for store in (RedisStore(client, prefix=prefix), connect):
            store.save("s1", record())
            assert store.send_plan(merge_plan("s1", Change(set={"visits": 9}))) is None
            got = store.load("s1")
            assert got is not None
            assert got.data["visits"] == 9
            store.delete("s1")
    finally:
        connect.close()
        client.close()


def test_cached_sent_merge_keeps_the_merged_record(cached: RedisStore, raw: redis.Redis) -> None:
    cached.save("s1", record())
    assert cached.prefetch("s1").result() is not None
    pending = cached.send_plan(merge_plan("s1", Change(set={"visits": 3})))
    assert pending is not None
    pending.result()
    before = command_calls(raw)["hgetall"]
    got = cached.prefetch("s1").result()
    assert got is not None
    assert got.data["visits"] == 3
    assert command_calls(raw)["hgetall"] == before, "the merge's answer refreshed the cache"


def test_cached_sent_touch_forgets_the_cached_record(cached: RedisStore, raw: redis.Redis) -> None:
    cached.save("s1", record(ttl=60))
    assert cached.prefetch("s1").result() is not None
    pending = cached.send_plan(Plan(Action.TOUCH, sid="s1", expires=time.time() + 3600))
    assert pending is not None
    pending.result()
    before = command_calls(raw)["hgetall"]
    got = cached.prefetch("s1").result()
    assert got is not None
    assert got.expires > time.time() + 3000
    assert command_calls(raw)["hgetall"] == before + 1
