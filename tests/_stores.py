"""Store test helpers: records, the sync-to-async adapter, command counters, and the private reach-ins.

Every store test module imports what it needs from here (``pythonpath``
includes ``tests/``; a conftest cannot be imported under
``--import-mode=importlib``)::

    from _stores import HOUR, adapt, live, new_sid

    store = adapt(SqliteStore(path))  # an async store is returned as it is
    await store.save(new_sid(), live({"user": 42}))

- **Records**: :func:`new_sid`, :func:`live`, :func:`expired`, :data:`HOUR`.
- **What a kind may be expected to do**: :class:`Expect` (:data:`EXACT` for
  persession's own layout, :func:`express` for the connect-* layouts), read
  by :func:`same_record`, :func:`same_expiry` and :func:`user_data`;
  :class:`StoreKind` is one entry of the contract suite's kinds.
- **The adapter**: :func:`adapt` puts a synchronous store behind the async
  protocols it has a sync twin of (:class:`SyncAdapter`), so one test body
  checks both flavours and drift between them shows up as a failure.
- **Counting**: :class:`CountingConnection` / :class:`AsyncCountingConnection`
  count the requests a redis-py client sends (one per round trip),
  :func:`command_calls` and :func:`delta` what a Redis server ran, and
  :class:`CommandCounter` the commands a PyMongo client sends.
- **Reach-ins**: :func:`own_pool`, :func:`own_mux`, :func:`own_address`,
  :func:`idle_sockets`, :func:`client_cache` and :func:`pending_reads` are
  the only places the store tests touch a Redis store's private attributes,
  so that moving those edits this file alone (``tests/_mongo.py`` has
  Mongo's); :func:`without_returning` is SQLite's. They are typed loosely on purpose: naming the classes would tie
  this file to the modules that define them.
- **Raw access**: :class:`RawIndex` reads a store's user index straight from
  its backend (:class:`MemoryIndex`, :class:`SqliteIndex`,
  :class:`RedisIndex`, :class:`MongoIndex`), and :class:`RawExpress` reads
  and plants express-layout records as Node's store would
  (:class:`RedisExpress`, :class:`MongoExpress`); :func:`unwrap` takes a
  sync store back out of its adapter. :class:`MemoryIndex` is the one
  reach-in into a memory store (its table: there is no backend to read).
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio.connection
import redis.cluster
import redis.connection
from pymongo import MongoClient, monitoring

from persession.codecs import COOKIE
from persession.records import Change, Record, SessionInfo
from persession.stores import (
    AsyncMemoryStore,
    AsyncSqliteStore,
    AsyncStore,
    MemoryStore,
    RollingLoad,
    SqliteStore,
    Store,
    UserIndex,
)
from persession.stores.mongo import AsyncMongoStore, MongoStore
from persession.stores.redis import AsyncRedisStore, RedisStore

__all__ = [
    "HOUR",
    "new_sid",
    "live",
    "expired",
    "Expect",
    "EXACT",
    "express",
    "same_record",
    "same_expiry",
    "user_data",
    "StoreOpener",
    "StoreKind",
    "SyncAdapter",
    "adapt",
    "CountingConnection",
    "AsyncCountingConnection",
    "command_calls",
    "delta",
    "CommandCounter",
    "own_pool",
    "own_mux",
    "own_address",
    "idle_sockets",
    "client_cache",
    "pending_reads",
    "without_returning",
    "unwrap",
    "RawIndex",
    "MemoryIndex",
    "SqliteIndex",
    "RedisIndex",
    "MongoIndex",
    "RawExpress",
    "RedisExpress",
    "MongoExpress",
]

HOUR = 3600.0


# --- records --------------------------------------------------------------------------------------


def new_sid() -> str:
    """A session id no other test uses (stores on shared servers keep records), in the default signer's alphabet."""
    return uuid.uuid4().hex + "AbC_-xyz123"


def live(
    data: dict[str, Any] | None = None,
    *,
    age: float = 60.0,
    ttl: float = HOUR,
    created: float | None = None,
    idle: float | None = None,
) -> Record:
    """A record created ``age`` seconds ago (or at ``created``) that expires ``ttl`` seconds from now.

    It was last accessed ``idle`` seconds ago (default: ``age``, when it was
    created). ``data`` defaults to ``{"n": 1}``.
    """
    now = time.time()
    start = now - age if created is None else created
    accessed = now - (age if idle is None else idle)
    return Record({"n": 1} if data is None else data, created=start, accessed=accessed, expires=now + ttl)


def expired(data: dict[str, Any]) -> Record:
    """A record whose expiry is already in the past."""
    now = time.time()
    return Record(data, created=now - 2 * HOUR, accessed=now - HOUR, expires=now - 10)


# --- what the contract may expect of a store kind -----------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What the store contract may expect of one store kind; the defaults (:data:`EXACT`) expect everything.

    A contract test that a kind cannot pass for a documented reason runs only
    on the kinds whose ``Expect`` allows it (``@pytest.mark.expects(...)`` in
    ``tests/stores/conftest.py``), so the test ids show what runs where.
    """

    #: The store keeps a record's ``created`` and ``accessed`` as saved (connect-*: both read as now). Default True.
    keeps_times: bool = True
    #: Data members the store owns and adds on load, left out of comparisons (express: ``cookie``). Default none.
    reserved_keys: frozenset[str] = frozenset()
    #: How far a loaded ``expires`` may be from the saved one, in seconds. Default 0: exactly equal.
    expiry_tolerance: float = 0.0
    #: The store keeps a per-user index (``user_sessions``, ``revoke_user``). Default True.
    indexes: bool = True
    #: ``load_touch`` counts an absolute timeout from ``created``. Default True.
    absolute_timeout: bool = True
    #: A merge is one atomic operation on the server, so any number of concurrent merges of one session all
    #: land. Default True. connect-mongo merges by compare-and-swap, at most ``CAS_ATTEMPTS`` attempts: a
    #: merge loses an attempt only to another merge that landed, so up to that many concurrent merges of one
    #: session all land, and more may raise ``StoreError``.
    atomic_merges: bool = True

    @property
    def exact(self) -> bool:
        """Whether a loaded record must equal the saved one, field for field."""
        return self.keeps_times and not self.reserved_keys and self.expiry_tolerance == 0


#: persession's own layout on every backend: records load back exactly as saved.
EXACT = Expect()


def express(expiry_tolerance: float, *, atomic_merges: bool = True) -> Expect:
    """The connect-redis and connect-mongo layouts: express-session's JSON, shared with Node.

    The record is express-session's session object: it carries a ``cookie``
    member the store adds when the data has none, and no times but the
    store's expiry (created and accessed load as now). The layouts keep no
    user index and no creation time to count an absolute timeout from.
    ``expiry_tolerance``: connect-redis reads its expiry back as a TTL in
    milliseconds relative to the moment the load was sent, connect-mongo as a
    BSON date (milliseconds). ``atomic_merges``: see :attr:`Expect.atomic_merges`.
    """
    return Expect(
        keeps_times=False,
        reserved_keys=frozenset({COOKIE}),
        expiry_tolerance=expiry_tolerance,
        indexes=False,
        absolute_timeout=False,
        atomic_merges=atomic_merges,
    )


def user_data(record: Record, expect: Expect) -> dict[str, Any]:
    """``record``'s data without the members the store owns (all of it for an :data:`EXACT` kind)."""
    return {key: value for key, value in record.data.items() if key not in expect.reserved_keys}


def same_expiry(loaded: float, saved: float, expect: Expect) -> bool:
    """Whether a loaded expiry is the saved one: equal, or within the kind's ``expiry_tolerance``."""
    if expect.expiry_tolerance == 0:
        return loaded == saved
    return abs(loaded - saved) <= expect.expiry_tolerance


def same_record(loaded: Record | None, saved: Record, expect: Expect) -> bool:
    """Whether ``loaded`` is ``saved`` as the kind keeps it: ``==`` for an :data:`EXACT` kind.

    Otherwise: the same data but the store's own members, the same expiry
    within the tolerance, and the same ``created`` and ``accessed`` if the
    kind keeps them.
    """
    if loaded is None:
        return False
    if expect.exact:
        return loaded == saved
    if expect.keeps_times and (loaded.created, loaded.accessed) != (saved.created, saved.accessed):
        return False
    return user_data(loaded, expect) == user_data(saved, expect) and same_expiry(loaded.expires, saved.expires, expect)


#: Opens a store for one contract test: ``(request, tmp_path) -> async context manager`` of its async protocols.
StoreOpener = Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[AsyncStore]]


@dataclass(frozen=True)
class StoreKind:
    """One kind of store the contract suite runs on: how to open one, and what to expect of it."""

    open: StoreOpener
    #: What the contract may expect of it. Default :data:`EXACT`.
    expect: Expect = EXACT
    #: It needs a server process (the test gets ``pytest.mark.server``). Default False.
    server: bool = False


# --- the adapter ----------------------------------------------------------------------------------


class SyncAdapter:
    """Test-only: the async store protocol over a synchronous store (build one with :func:`adapt`)."""

    def __init__(self, store: Store) -> None:
        #: The wrapped synchronous store.
        self.sync = store

    async def load(self, sid: str) -> Record | None:
        return self.sync.load(sid)

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self.sync.save(sid, record, replaces=replaces)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self.sync.merge(sid, change, expires)

    async def touch(self, sid: str, expires: float) -> bool:
        return self.sync.touch(sid, expires)

    async def delete(self, sid: str) -> None:
        self.sync.delete(sid)

    async def close(self) -> None:
        self.sync.close()


class _LoadTouch:
    """``AsyncRollingLoad`` over a sync ``RollingLoad``."""

    sync: Any

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        record: Record | None = self.sync.load_touch(sid, idle, absolute)
        return record


class _Index:
    """``AsyncUserIndex`` over a sync ``UserIndex``."""

    sync: Any

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        self.sync.index_user(user, sid, expires)

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        sessions: list[SessionInfo] = self.sync.user_sessions(user)
        return sessions

    async def revoke_user(self, user: str) -> list[str]:
        revoked: list[str] = self.sync.revoke_user(user)
        return revoked


class _RollingAdapter(_LoadTouch, SyncAdapter):
    pass


class _IndexAdapter(_Index, SyncAdapter):
    pass


class _RollingIndexAdapter(_LoadTouch, _Index, SyncAdapter):
    pass


# Keyed by (has load_touch, has the user index): a runtime protocol's isinstance walks attributes,
# so the adapter offers a verb only when the store has it, and isinstance on the adapter tells the truth.
_ADAPTERS: dict[tuple[bool, bool], type[SyncAdapter]] = {
    (False, False): SyncAdapter,
    (True, False): _RollingAdapter,
    (False, True): _IndexAdapter,
    (True, True): _RollingIndexAdapter,
}


def adapt(store: Store | AsyncStore) -> AsyncStore:
    """The async protocols of ``store``: an async store as it is, a sync one in a :class:`SyncAdapter`.

    The adapter has ``load_touch`` only if the store is a ``RollingLoad``, and
    ``index_user``, ``user_sessions`` and ``revoke_user`` only if it is a
    ``UserIndex``; the wrapped store is its ``sync`` attribute.
    """
    if inspect.iscoroutinefunction(getattr(store, "load", None)):
        assert isinstance(store, AsyncStore)
        return store
    assert isinstance(store, Store), f"not a store: {type(store).__name__}"
    adapter = _ADAPTERS[isinstance(store, RollingLoad), isinstance(store, UserIndex)](store)
    assert isinstance(adapter, AsyncStore)
    return adapter


# --- counting: Redis ------------------------------------------------------------------------------


def _head(command: Any) -> bytes:
    chunks = command if isinstance(command, list) else [command]
    return b"".join(bytes(chunk) for chunk in chunks)[:60]


class CountingConnection(redis.connection.Connection):
    """A redis-py connection that records the start of every request it sends (one per round trip).

    Give it to a pool (``connection_class=CountingConnection``); clear
    :attr:`sent` before the calls to count.
    """

    sent: ClassVar[list[bytes]] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent.append(_head(command))
        super().send_packed_command(command, check_health)


class AsyncCountingConnection(redis.asyncio.connection.Connection):
    """The asyncio twin of :class:`CountingConnection`."""

    sent: ClassVar[list[bytes]] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        AsyncCountingConnection.sent.append(_head(command))
        await super().send_packed_command(command, check_health)


def command_calls(*clients: redis.Redis) -> collections.Counter[str]:
    """Calls per command from ``INFO commandstats``, summed over the clients' servers (INFO itself left out).

    Scripts' own commands are counted too; a command never run counts 0.
    """
    totals: collections.Counter[str] = collections.Counter()
    for client in clients:
        for name, value in client.info("commandstats").items():
            if name != "cmdstat_info":
                totals[name.removeprefix("cmdstat_")] += value["calls"]
    return totals


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands whose call counts changed between two :func:`command_calls`, and by how much."""
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


# --- counting: MongoDB ----------------------------------------------------------------------------


class CommandCounter(monitoring.CommandListener):
    """The name of every command a PyMongo client sends (one started event per round trip).

    Give it to the client (``event_listeners=[counter]``).
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        """The command names sent since the last call."""
        names, self.names = self.names, []
        return names


# --- reach-ins: a Redis store's own connections and cache -----------------------------------------


def own_pool(store: RedisStore) -> Any:
    """The pool of persession's own connections of a store built from a URL; fails the test if it has none."""
    transport = store._transport
    pool = getattr(transport, "pool", None) or getattr(transport, "_pool", None)
    assert pool is not None, "the store has no connections of its own"
    return pool


def own_mux(store: AsyncRedisStore) -> Any:
    """The asyncio twin of :func:`own_pool`: the store's own multiplexed connection."""
    transport = store._transport
    mux = getattr(transport, "mux", None) or getattr(transport, "_mux", None)
    assert mux is not None, "the store has no connection of its own"
    return mux


def own_address(store: RedisStore | AsyncRedisStore) -> Any:
    """Where and how a store's own connections connect (host, db, timeouts, TLS context...)."""
    return own_pool(store).address if isinstance(store, RedisStore) else own_mux(store).address


def idle_sockets(store: RedisStore) -> list[socket.socket]:
    """The sockets of the connections idle in a store's own pool, oldest first."""
    return [connection._sock for connection in own_pool(store)._idle]


def client_cache(store: RedisStore | AsyncRedisStore) -> Any:
    """The client-side cache of a store built with ``client_cache=N``; fails the test if it has none."""
    cache = getattr(store._transport, "_entries", None)
    assert cache is not None, "the store has no client_cache"
    return cache


def pending_reads(store: RedisStore) -> Collection[str]:
    """The keys whose reads the cache is waiting for (their replies may still be kept)."""
    pending: Collection[str] = client_cache(store)._pending
    return pending


# --- reach-ins: SQLite ----------------------------------------------------------------------------


def without_returning(store: SqliteStore | AsyncSqliteStore) -> None:
    """Make a SQLite store use the transactions it falls back to before SQLite 3.35 (no ``RETURNING``)."""
    store._db.returning = False


# --- raw access: what a store keeps, read (and written) behind its back -------------------------


def unwrap(store: AsyncStore) -> Store | AsyncStore:
    """The store :func:`adapt` was given: a sync store out of its :class:`SyncAdapter`, an async one as it is."""
    return store.sync if isinstance(store, SyncAdapter) else store


class RawIndex:
    """A store's per-user index read straight from its backend, with a client of the test's own.

    One subclass per backend: :class:`MemoryIndex`, :class:`SqliteIndex`,
    :class:`RedisIndex`, :class:`MongoIndex`. Close it after the test (it may
    hold a client).
    """

    #: The entries are part of the session records (MongoDB: a ``user`` field of the document), so the
    #: backend's own expiry removes them with the record and the store never prunes them. Default False.
    in_records: ClassVar[bool] = False

    def entries(self, user: str) -> set[str]:
        """The session ids the index holds for ``user``, live or not."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the client this view opened (default: it opened none)."""


class MemoryIndex(RawIndex):
    """A memory store's index: the one reach-in into its table (it has no backend to read instead)."""

    def __init__(self, store: MemoryStore | AsyncMemoryStore) -> None:
        self._users: dict[str, set[str]] = store._table.users

    def entries(self, user: str) -> set[str]:
        return set(self._users.get(user, set()))


class SqliteIndex(RawIndex):
    """A SQLite store's index table (``<table>_users``), read on a connection of its own."""

    def __init__(self, path: Path, table: str = "persession_sessions") -> None:
        self._path = path
        self._query = f"SELECT sid FROM {table}_users WHERE user = ?"  # noqa: S608  (the test's own name)

    def entries(self, user: str) -> set[str]:
        with contextlib.closing(sqlite3.connect(self._path)) as connection:
            return {row[0] for row in connection.execute(self._query, (user,))}


class RedisIndex(RawIndex):
    """A Redis store's index sets (``<prefix>user:<user>``), read with a redis-py client it closes."""

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def entries(self, user: str) -> set[str]:
        members = self._client.smembers(f"{self._prefix}user:{user}")
        return {member.decode() if isinstance(member, bytes) else member for member in members}

    def close(self) -> None:
        self._client.close()


class MongoIndex(RawIndex):
    """A MongoDB store's index: the ``user`` field of its documents, read with a PyMongo client of its own."""

    in_records = True

    def __init__(self, url: str, store: MongoStore | AsyncMongoStore) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
        self._collection = self._client[store.collection.database.name][store.collection.name]

    def entries(self, user: str) -> set[str]:
        return {document["_id"] for document in self._collection.find({"user": user}, {"_id": 1})}

    def close(self) -> None:
        self._client.close()


class RawExpress:
    """A store's records in an express layout (connect-redis, connect-mongo), as Node's store reads and writes them.

    :class:`RedisExpress` and :class:`MongoExpress` are the backends. Close it
    after the test (it holds a client).
    """

    def text(self, sid: str) -> str | None:
        """The stored JSON text of ``sid``, ``None`` if there is no record."""
        raise NotImplementedError

    def store_expiry(self, sid: str) -> float | None:
        """The store's own expiry of ``sid`` (Unix time), ``None`` when it keeps none; the record must exist."""
        raise NotImplementedError

    def plant(self, sid: str, text: str, ttl: float | None = 60) -> None:
        """Store ``text`` as Node's store would (connect-redis' SET PX, connect-mongo's upsert).

        ``ttl=None``: with no store expiry (connect-redis' ``disableTTL``, a
        connect-mongo document without ``expires``). Default 60 seconds.
        """
        raise NotImplementedError

    def stored(self, sid: str) -> tuple[str, float] | None:
        """The stored JSON text and the store's expiry (Redis TTL, Mongo ``expires``); ``None`` if no record."""
        text = self.text(sid)
        if text is None:
            return None
        expiry = self.store_expiry(sid)
        assert expiry is not None, "the record has no store expiry"
        return text, expiry

    def close(self) -> None:
        """Close the client."""
        raise NotImplementedError


class RedisExpress(RawExpress):
    """connect-redis' records: a string at ``<prefix><sid>`` with a TTL, through a redis-py client it closes."""

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def text(self, sid: str) -> str | None:
        raw = self._client.get(self._prefix + sid)
        return raw.decode() if isinstance(raw, bytes) else raw

    def store_expiry(self, sid: str) -> float | None:
        pttl = int(self._client.pttl(self._prefix + sid))
        assert pttl != -2, "no such key"
        return None if pttl == -1 else time.time() + pttl / 1000

    def plant(self, sid: str, text: str, ttl: float | None = 60) -> None:
        self._client.set(self._prefix + sid, text, px=None if ttl is None else int(ttl * 1000))

    def close(self) -> None:
        self._client.close()


class MongoExpress(RawExpress):
    """connect-mongo's documents (``session`` text, ``expires`` date), through a PyMongo client of its own."""

    def __init__(self, url: str, store: MongoStore | AsyncMongoStore) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
        #: The store's collection, as a PyMongo client of the test's sees it.
        self.collection = self._client[store.collection.database.name][store.collection.name]

    def text(self, sid: str) -> str | None:
        document = self.collection.find_one({"_id": sid})
        return None if document is None else str(document["session"])

    def store_expiry(self, sid: str) -> float | None:
        document = self.collection.find_one({"_id": sid})
        assert document is not None, "no such document"
        return None if "expires" not in document else float(document["expires"].timestamp())

    def plant(self, sid: str, text: str, ttl: float | None = 60) -> None:
        fields: dict[str, Any] = {"session": text}
        if ttl is not None:
            fields["expires"] = datetime.fromtimestamp(time.time() + ttl, tz=timezone.utc)
        self.collection.update_one({"_id": sid}, {"$set": fields}, upsert=True)

    def close(self) -> None:
        self._client.close()
