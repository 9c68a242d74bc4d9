"""The per-user session index and Redis revocations, on every store kind and flavour, against real servers.

Each store is wrapped in :class:`Kit`: the async index protocol (a sync store
goes through ``_stores.adapt``, so both twins run the same test body) plus a
way to look at the raw index behind the store's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
from persession.config import SessionConfig
from persession.core import Action, Plan, SessionEngine
from persession.guard import login, logout
from persession.records import Change, Record, SessionInfo
from persession.stores import (
    AsyncMemoryStore,
    AsyncSqliteStore,
    AsyncStore,
    AsyncUserIndex,
    MemoryStore,
    RevocationFeed,
    SqliteStore,
    Store,
    UserIndex,
    arun_plan,
    run_plan,
)
from persession.stores.mongo import AsyncMongoStore, MongoStore
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


# --- the stores under test ------------------------------------------------------------------------


@dataclass
class Kit:
    """A store under test, the sync store it wraps (if any), and a raw view of its index."""

    kind: str
    store: Any  # AsyncStore and AsyncUserIndex
    sync: Store | None
    #: The session ids the backend's index holds for a user, read behind the store's back.
    entries: Callable[[str], set[str]]

    @property
    def native(self) -> Store | AsyncStore:
        """The store itself: the sync one for a sync kind, else the async one."""
        return self.sync if self.sync is not None else self.store


def _memory_entries(store: MemoryStore | AsyncMemoryStore) -> Callable[[str], set[str]]:
    return lambda user: set(store._table.users.get(user, set()))


def _sqlite_entries(path: Path) -> Callable[[str], set[str]]:
    def entries(user: str) -> set[str]:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            rows = connection.execute("SELECT sid FROM persession_sessions_users WHERE user = ?", (user,))
            return {row[0] for row in rows}

    return entries


def _redis_entries(servers: RedisServers, kind: str, prefix: str) -> Callable[[str], set[str]]:
    def entries(user: str) -> set[str]:
        server = servers.single() if kind == "single" else servers.cluster()
        with server.client() as client:
            return {member.decode() for member in client.smembers(f"{prefix}user:{user}")}

    return entries


def _mongo_entries(store: MongoStore | AsyncMongoStore, url: str) -> Callable[[str], set[str]]:
    from pymongo import MongoClient

    names = (store.collection.database.name, store.collection.name)

    def entries(user: str) -> set[str]:
        with MongoClient(url) as client:
            return {doc["_id"] for doc in client[names[0]][names[1]].find({"user": user}, {"_id": 1})}

    return entries


KINDS = [
    "memory-sync",
    "memory-async",
    "sqlite-sync",
    "sqlite-async",
    "redis-single-sync",
    "redis-single-async",
    "redis-cluster-sync",
    "redis-cluster-async",
    "mongo-sync",
    "mongo-async",
]
SERVER_KINDS = {kind for kind in KINDS if kind.startswith(("redis", "mongo"))}


@contextlib.asynccontextmanager
async def open_kit(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    """A fresh store of ``kind``, wrapped in a :class:`Kit`, closed (and its data removed) afterwards."""
    backend, *rest = kind.split("-")
    flavour = rest[-1]
    if backend == "memory":
        memory = MemoryStore() if flavour == "sync" else AsyncMemoryStore()
        yield _kit(kind, memory, _memory_entries(memory))
    elif backend == "sqlite":
        path = tmp_path / "sessions.db"
        sqlite = SqliteStore(path) if flavour == "sync" else AsyncSqliteStore(path)
        try:
            yield _kit(kind, sqlite, _sqlite_entries(path))
        finally:
            if isinstance(sqlite, AsyncSqliteStore):
                await sqlite.close()
            else:
                sqlite.close()
    elif backend == "redis":
        servers: RedisServers = request.getfixturevalue("redis_servers")
        async with make_redis_store(flavour, rest[0], "user_index", servers=servers) as store:
            yield _kit(kind, store, _redis_entries(servers, rest[0], store.prefix))
    else:
        server = request.getfixturevalue("mongo_server")
        async with make_mongo_store(flavour, "user_index") as mongo:
            yield _kit(kind, mongo, _mongo_entries(mongo, server.url))


def _kit(kind: str, store: Any, entries: Callable[[str], set[str]]) -> Kit:
    return Kit(kind, adapt(store), store if kind.endswith("-sync") else None, entries)


@pytest.fixture(
    params=[pytest.param(kind, id=kind, marks=[pytest.mark.server] if kind in SERVER_KINDS else []) for kind in KINDS]
)
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    """Every store kind and flavour, fresh for each test."""
    async with open_kit(request.param, request, tmp_path) as opened:
        yield opened


async def saved(kit: Kit, user: str | None, record: Record | None = None) -> tuple[str, Record]:
    """Save a new session (indexed under ``user`` unless None); return its id and record."""
    sid, record = new_sid(), record if record is not None else live(idle=ACTIVE)
    await kit.store.save(sid, record)
    if user is not None:
        await kit.store.index_user(user, sid, record.expires)
    return sid, record


# --- the protocols and exports --------------------------------------------------------------------


async def test_every_store_class_implements_the_index(kit: Kit) -> None:
    """Every built-in store satisfies UserIndex (sync) or AsyncUserIndex (async), as run_plan checks."""
    if kit.sync is not None:
        assert isinstance(kit.sync, UserIndex)
    else:
        assert isinstance(kit.store, AsyncUserIndex)
    assert isinstance(kit.native, RevocationFeed) is (kit.kind.startswith("redis") and kit.kind.endswith("async"))


def test_index_types_are_exported() -> None:
    """SessionInfo is at the top level and in persession.stores, beside the index and feed protocols."""
    assert persession.SessionInfo is SessionInfo
    assert "SessionInfo" in persession.__all__
    for name in ("UserIndex", "AsyncUserIndex", "RevocationFeed", "SessionInfo"):
        assert name in persession.stores.__all__
        assert getattr(persession.stores, name) is not None
    assert persession.stores.SessionInfo is SessionInfo


# --- indexing and listing -------------------------------------------------------------------------


async def test_index_after_save_lists_the_session(kit: Kit) -> None:
    """A saved and indexed session is listed with exactly its created, accessed and expires."""
    user = new_user()
    sid, record = await saved(kit, user)
    assert await kit.store.user_sessions(user) == [info(sid, record)]
    assert kit.entries(user) == {sid}


async def test_user_sessions_are_oldest_first(kit: Kit) -> None:
    """Sessions are listed by created, oldest first, whatever order they were indexed in."""
    user = new_user()
    now = time.time()
    made = [await saved(kit, user, live(created=now - age, idle=ACTIVE)) for age in (50.0, 500.0, 5.0, 5000.0)]
    listed = await kit.store.user_sessions(user)
    assert [entry.sid for entry in listed] == [sid for sid, _ in sorted(made, key=lambda pair: pair[1].created)]
    assert listed == sorted((info(sid, record) for sid, record in made), key=lambda entry: entry.created)


async def test_unknown_user_has_no_sessions(kit: Kit) -> None:
    """A user never indexed lists nothing and revokes nothing."""
    user = new_user()
    assert await kit.store.user_sessions(user) == []
    assert await kit.store.revoke_user(user) == []


async def test_indexing_twice_is_idempotent(kit: Kit) -> None:
    """Indexing the same session under the same user twice leaves one entry."""
    user = new_user()
    sid, record = await saved(kit, user)
    await kit.store.index_user(user, sid, record.expires)
    assert await kit.store.user_sessions(user) == [info(sid, record)]
    assert kit.entries(user) == {sid}


async def test_indexing_a_missing_session_records_nothing(kit: Kit) -> None:
    """index_user on an id that was never saved (or already expired) adds no entry."""
    user = new_user()
    await kit.store.index_user(user, new_sid(), time.time() + HOUR)
    sid, _ = await saved(kit, None)
    await kit.store.touch(sid, time.time() - 1)  # now expired
    await kit.store.index_user(user, sid, time.time() + HOUR)
    assert await kit.store.user_sessions(user) == []
    assert kit.entries(user) == set()


async def test_users_are_kept_apart(kit: Kit) -> None:
    """Each user lists only their own sessions."""
    alice, bob = new_user("alice"), new_user("bob")
    a1, a1_record = await saved(kit, alice)
    b1, b1_record = await saved(kit, bob)
    await saved(kit, None)  # an anonymous session is in nobody's index
    assert await kit.store.user_sessions(alice) == [info(a1, a1_record)]
    assert await kit.store.user_sessions(bob) == [info(b1, b1_record)]


@pytest.mark.parametrize(
    "label",
    [
        pytest.param(":", id="colon"),
        pytest.param("user:42", id="looks-like-an-index-key"),
        pytest.param("ünïcødé 名前 🎉", id="unicode"),
        pytest.param("", id="empty"),
        pytest.param("{tag}", id="hash-tag"),
        pytest.param("*?[x] %.$", id="glob-and-escapes"),
        pytest.param("x" * 300, id="long"),
    ],
)
async def test_odd_user_ids_work(kit: Kit, label: str) -> None:
    """User ids with colons, unicode, braces, globs, or nothing at all index, list and revoke like any other."""
    user = label  # every kit is a fresh namespace: no other test sees these ids
    other = user + ":"  # a user id that extends this one must not share its index
    sid, record = await saved(kit, user)
    other_sid, _ = await saved(kit, other)
    assert await kit.store.user_sessions(user) == [info(sid, record)]
    assert await kit.store.revoke_user(user) == [sid]
    assert await kit.store.load(sid) is None
    assert [entry.sid for entry in await kit.store.user_sessions(other)] == [other_sid]
    await kit.store.revoke_user(other)


async def test_a_user_named_like_a_session_id_cannot_touch_that_session(kit: Kit) -> None:
    """Revoking a user whose id equals some session's id leaves that session alone (keys cannot collide)."""
    sid, record = await saved(kit, None)
    owner = new_user()
    await kit.store.index_user(owner, sid, record.expires)
    assert await kit.store.revoke_user(sid) == []
    assert await kit.store.user_sessions(sid) == []
    assert await kit.store.load(sid) == record
    assert await kit.store.user_sessions(owner) == [info(sid, record)]


# --- dead entries ---------------------------------------------------------------------------------


async def test_deleted_sessions_drop_out_and_are_pruned(kit: Kit) -> None:
    """A deleted session is no longer listed, and listing removes its entry from the backend."""
    user = new_user()
    gone, _ = await saved(kit, user)
    kept, kept_record = await saved(kit, user)
    await kit.store.delete(gone)
    assert await kit.store.user_sessions(user) == [info(kept, kept_record)]
    assert kit.entries(user) == {kept}


async def test_expired_sessions_drop_out(kit: Kit) -> None:
    """A session that expires on its own (in real time) is no longer listed or revoked."""
    user = new_user()
    await saved(kit, user, live(ttl=0.4, idle=ACTIVE))
    kept, kept_record = await saved(kit, user)
    await asyncio.sleep(0.6)
    assert await kit.store.user_sessions(user) == [info(kept, kept_record)]
    if not kit.kind.startswith("mongo"):
        # MongoDB's entry is a field of the session document, removed with it by the TTL monitor.
        assert kit.entries(user) == {kept}
    assert await kit.store.revoke_user(user) == [kept]


async def test_sessions_expired_by_touch_drop_out(kit: Kit) -> None:
    """A session whose expiry a touch moved into the past is no longer listed."""
    user = new_user()
    ended, _ = await saved(kit, user)
    kept, kept_record = await saved(kit, user)
    assert await kit.store.touch(ended, time.time() - 1) is True
    assert await kit.store.user_sessions(user) == [info(kept, kept_record)]


async def test_indexing_prunes_dead_entries(kit: Kit) -> None:
    """A login drops the user's dead entries, so a user who never lists sessions has a bounded index."""
    user = new_user()
    dead = [(await saved(kit, user))[0] for _ in range(3)]
    for sid in dead:
        await kit.store.delete(sid)
    sid, _ = await saved(kit, user)
    assert kit.entries(user) == {sid}


async def test_active_sessions_outlive_their_first_expiry_in_the_index(kit: Kit) -> None:
    """A session kept alive by touch or merge past its login-time expiry stays listed and revocable."""
    user = new_user()
    # 1.5 s: room for two indexed saves and a touch on a slow Cluster under coverage (0.5 s was not).
    touched, first = await saved(kit, user, live(ttl=1.5, idle=ACTIVE))
    merged, second = await saved(kit, user, live(ttl=1.5, idle=ACTIVE))
    later = time.time() + HOUR
    assert await kit.store.touch(touched, later) is True
    assert await kit.store.merge(merged, Change({"fresh": True}, cleared=True), later) is True
    # Past the expiry both sessions had when they were indexed.
    await asyncio.sleep(max(first.expires, second.expires) + 0.3 - time.time())
    listed = await kit.store.user_sessions(user)
    assert {entry.sid for entry in listed} == {touched, merged}
    assert all(entry.expires == later for entry in listed)
    assert await kit.store.revoke_user(user) == sorted([touched, merged])
    assert await kit.store.load(touched) is None
    assert await kit.store.load(merged) is None


async def test_saving_over_an_indexed_session_keeps_it_indexed(kit: Kit) -> None:
    """Rewriting a session's whole record under the same id leaves it in its user's index."""
    user = new_user()
    sid, _ = await saved(kit, user)
    again = live(age=5.0, idle=ACTIVE)
    await kit.store.save(sid, again)
    assert await kit.store.user_sessions(user) == [info(sid, again)]
    assert await kit.store.revoke_user(user) == [sid]


# --- revocation -----------------------------------------------------------------------------------


async def test_revoke_user_deletes_all_and_only_that_users_sessions(kit: Kit) -> None:
    """revoke_user deletes every session of the user, returns their ids, and empties the index."""
    alice, bob = new_user("alice"), new_user("bob")
    mine = [(await saved(kit, alice))[0] for _ in range(3)]
    theirs, theirs_record = await saved(kit, bob)
    anonymous, anonymous_record = await saved(kit, None)
    assert await kit.store.revoke_user(alice) == sorted(mine)
    for sid in mine:
        assert await kit.store.load(sid) is None
    assert await kit.store.user_sessions(alice) == []
    assert kit.entries(alice) == set()
    assert await kit.store.load(theirs) == theirs_record
    assert await kit.store.load(anonymous) == anonymous_record
    assert await kit.store.user_sessions(bob) == [info(theirs, theirs_record)]
    assert await kit.store.revoke_user(alice) == []


async def test_revoke_returns_only_live_ids(kit: Kit) -> None:
    """Ids of sessions already deleted or expired are not reported as revoked."""
    user = new_user()
    kept, _ = await saved(kit, user)
    deleted, _ = await saved(kit, user)
    ended, _ = await saved(kit, user)
    await kit.store.delete(deleted)
    await kit.store.touch(ended, time.time() - 1)
    assert await kit.store.revoke_user(user) == [kept]
    assert await kit.store.load(kept) is None


async def test_a_session_indexed_after_a_revoke_is_listed_again(kit: Kit) -> None:
    """A revoke removes the index, and the user's next login starts a new one."""
    user = new_user()
    await saved(kit, user)
    await kit.store.revoke_user(user)
    sid, record = await saved(kit, user)
    assert await kit.store.user_sessions(user) == [info(sid, record)]


# --- end to end: the engine, run_plan and guard.login ---------------------------------------------


async def run(kit: Kit, plan: Plan) -> None:
    """Carry out ``plan`` with run_plan on a sync store, or arun_plan on an async one."""
    if kit.sync is not None:
        run_plan(kit.sync, plan)
    else:
        await arun_plan(kit.store, plan)


async def test_login_through_the_engine_indexes_the_session(kit: Kit) -> None:
    """A login request's plan saves the session and indexes it under str(user); logout drops it."""
    engine = SessionEngine(SessionConfig(secret="s" * 32))
    user = uuid.uuid4().int % 10**9

    async def log_in() -> Plan:
        opening = engine.open(None)
        session = engine.build(opening, None)
        login(session, user, role="admin")
        plan = engine.plan(session, opening, status=200, secure_request=True)
        assert plan.action is Action.SAVE
        assert plan.user == str(user)
        await run(kit, plan)
        return plan

    first = await log_in()
    second = await log_in()
    assert first.sid is not None
    assert second.sid is not None
    assert first.record is not None
    assert second.record is not None
    listed = await kit.store.user_sessions(str(user))
    assert {entry.sid for entry in listed} == {first.sid, second.sid}
    assert info(first.sid, first.record) in listed
    assert info(second.sid, second.record) in listed
    stored = await kit.store.load(first.sid)
    assert stored is not None
    assert stored.data == {"user": user, "role": "admin"}

    # The next request on the first session logs out: a DELETE that drops it from the index.
    cookie = f"session={first.set_cookie.split(';')[0].split('=', 1)[1]}" if first.set_cookie else None
    opening = engine.open(cookie)
    assert opening.sid == first.sid
    session = engine.build(opening, await kit.store.load(first.sid))
    logout(session)
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.DELETE
    await run(kit, plan)
    assert [entry.sid for entry in await kit.store.user_sessions(str(user))] == [second.sid]
    assert await kit.store.revoke_user(str(user)) == [second.sid]


async def test_a_save_without_login_indexes_nothing(kit: Kit) -> None:
    """An ordinary new session (no login) is saved but not indexed under anyone."""
    engine = SessionEngine(SessionConfig(secret="s" * 32))
    opening = engine.open(None)
    session = engine.build(opening, None)
    session["user"] = "not via login"
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.user is None
    await run(kit, plan)
    assert plan.sid is not None
    assert await kit.store.load(plan.sid) is not None
    assert await kit.store.user_sessions("not via login") == []


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
        kit = _kit(f"mongo-{flavour}", store, lambda user: set())
        user = new_user()
        sid, record = new_sid(), live(idle=ACTIVE)
        await kit.store.save(sid, record)
        assert counter.take() == ["createIndexes", "update"]
        await kit.store.index_user(user, sid, record.expires)
        assert counter.take() == ["update"]
        assert await kit.store.user_sessions(user) == [info(sid, record)]
        assert counter.take() == ["find"]
        assert await kit.store.revoke_user(user) == [sid]
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
    kit = _kit(f"redis-single-{publisher_flavour}", publisher, lambda user: set())
    try:
        assert isinstance(watcher, RevocationFeed)
        async with watching(watcher) as queue:
            await wait_for(
                lambda: _has_subscriber(redis_server.url, channel), "the watcher did not subscribe to the channel"
            )
            user = new_user()
            logged_out, _ = await saved(kit, user)
            await kit.store.delete(logged_out)
            assert await received(queue, 1) == [logged_out]
            revoked = sorted([(await saved(kit, user))[0] for _ in range(2)])
            await saved(kit, new_user())  # another user's session is not announced
            assert await kit.store.revoke_user(user) == revoked
            assert sorted(await received(queue, 2)) == revoked
            assert queue.empty()
        await wait_for(lambda: _has_no_subscriber(redis_server.url, channel), "cancelling did not unsubscribe")
    finally:
        await kit.store.close()
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
        kit = _kit("redis-cluster-sync", publisher, lambda user: set())
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
            logged_out, _ = await saved(kit, user)
            sids = sorted([(await saved(kit, user))[0] for _ in range(3)])
            await kit.store.delete(logged_out)
            assert await kit.store.revoke_user(user) == sids
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
