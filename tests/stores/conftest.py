"""The contract suite's ``store`` fixture: store x flavour x layout x transport, one async protocol.

The contract suite (``test_contract*.py``) is written once against
:class:`~persession.stores.AsyncStore`. A synchronous store is wrapped by
``_stores.adapt`` in a test-only ``SyncAdapter``, whose ``async`` methods call
the sync ones, so the same test body checks both twins and drift between them
shows up as a failure.

Each entry of :data:`KINDS` (a ``_stores.StoreKind``) opens a store for one
test (an async context manager yielding a ready store and closing it on exit)
and says what the contract may expect of it (a ``_stores.Expect``). The
``expect`` fixture hands a test its kind's ``Expect``, and ``kind`` its id.

Raw access behind the store's back, for the kinds that have it: the
``raw_index`` fixture (a ``_stores.RawIndex`` of the store's user index) and
``raw_express`` (a ``_stores.RawExpress`` of its express-layout records), each
on a client of the test's own to the store's server.

A test whose assertions do not apply to every kind is marked
``@pytest.mark.expects("keeps_times")`` (``Expect`` attributes that must be
true) or ``@pytest.mark.expects(indexes=False)`` (values they must have): it is
collected only for the kinds that match, so nothing is skipped silently and
the test ids say which kinds run it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import redis
import redis.cluster
import redis.sentinel

from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import CLIENT_TIMEOUT, RedisServers, redis_contract_factories, redis_servers_fixture  # noqa: F401
from _stores import (
    Expect,
    MemoryIndex,
    MongoExpress,
    MongoIndex,
    RawExpress,
    RawIndex,
    RedisExpress,
    RedisIndex,
    SqliteIndex,
    StoreKind,
    StoreOpener,
    adapt,
    express,
    unwrap,
    without_returning,
)
from persession.stores import AsyncMemoryStore, AsyncSqliteStore, AsyncStore, MemoryStore, SqliteStore
from persession.stores.mongo import AsyncMongoStore, Layout, MongoStore
from persession.stores.redis import AsyncRedisStore, RedisStore

#: connect-mongo keeps its expiry as a BSON date (milliseconds), and merges by compare-and-swap.
CONNECT_MONGO = express(0.002, atomic_merges=False)


@contextlib.asynccontextmanager
async def _closing(store: AsyncStore) -> AsyncIterator[AsyncStore]:
    try:
        yield store
    finally:
        await store.close()


def _memory(flavour: str) -> StoreOpener:
    def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[AsyncStore]:
        return _closing(adapt(MemoryStore()) if flavour == "sync" else AsyncMemoryStore())

    return open_store


def _sqlite(flavour: str, *, returning: bool = True) -> StoreOpener:
    def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[AsyncStore]:
        path = tmp_path / "sessions.db"
        store = SqliteStore(path) if flavour == "sync" else AsyncSqliteStore(path)
        if not returning:  # as on SQLite before 3.35, whatever this one is
            without_returning(store)
        return _closing(adapt(store))

    return open_store


def _mongo(flavour: str, layout: Layout = "persession") -> StoreOpener:
    @contextlib.asynccontextmanager
    async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncStore]:
        request.getfixturevalue("mongo_server")
        async with make_mongo_store("sync" if flavour == "sync" else "async", "contract", layout=layout) as opened:
            yield adapt(opened)

    return open_store


#: Every store kind the contract suite runs on, by test id: ``<backend or layout>[-<transport>]-<flavour>``.
KINDS: dict[str, StoreKind] = {
    "memory-sync": StoreKind(_memory("sync")),
    "memory-async": StoreKind(_memory("async")),
    "sqlite-sync": StoreKind(_sqlite("sync")),
    "sqlite-async": StoreKind(_sqlite("async")),
    "sqlite-fallback-sync": StoreKind(_sqlite("sync", returning=False)),
    "sqlite-fallback-async": StoreKind(_sqlite("async", returning=False)),
    **redis_contract_factories(adapt),
    "mongo-sync": StoreKind(_mongo("sync"), server=True),
    "mongo-async": StoreKind(_mongo("async"), server=True),
    "connect-mongo-sync": StoreKind(_mongo("sync", "connect-mongo"), CONNECT_MONGO, server=True),
    "connect-mongo-async": StoreKind(_mongo("async", "connect-mongo"), CONNECT_MONGO, server=True),
}


def _matches(expect: Expect, marker: pytest.Mark) -> bool:
    wanted = {**dict.fromkeys(marker.args, True), **marker.kwargs}
    unknown = set(wanted) - set(Expect.__dataclass_fields__)
    assert not unknown, f"expects() names no Expect attribute {sorted(unknown)}"
    return all(getattr(expect, name) == value for name, value in wanted.items())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "expects(*flags, **values): run a store contract test only on the kinds whose Expect matches"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Only the contract modules: the other store tests bring their own ``store`` fixtures.
    if "store" not in metafunc.fixturenames or not metafunc.definition.path.name.startswith("test_contract"):
        return
    marker = metafunc.definition.get_closest_marker("expects")
    params = [
        pytest.param(name, id=name, marks=[pytest.mark.server] if kind.server else [])
        for name, kind in KINDS.items()
        if marker is None or _matches(kind.expect, marker)
    ]
    assert params, f"{metafunc.definition.name}: no store kind matches {marker}"
    metafunc.parametrize("store", params, indirect=True)


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncStore]:
    """A fresh, empty store of each kind, closed after the test."""
    async with KINDS[request.param].open(request, tmp_path) as opened:
        yield opened


@pytest.fixture
def expect(request: pytest.FixtureRequest) -> Expect:
    """What the contract may expect of this test's store kind."""
    kind: str = request.node.callspec.params["store"]
    return KINDS[kind].expect


@pytest.fixture
def kind(request: pytest.FixtureRequest) -> str:
    """This test's store kind, by id (``memory-sync``, ``connect-redis-cluster-async``...)."""
    return str(request.node.callspec.params["store"])


def _redis_client(request: pytest.FixtureRequest, kind: str) -> redis.Redis | redis.cluster.RedisCluster:
    """A client of the test's own to the server (or cluster) that a Redis kind's store writes to."""
    servers: RedisServers = request.getfixturevalue("redis_servers")
    transport = kind.split("-")[-2]
    if transport == "cluster":
        return servers.cluster().client()
    if transport != "sentinel":
        return servers.single().client()
    sentinel = servers.sentinel()
    finder = redis.sentinel.Sentinel(sentinel.sentinels, socket_timeout=CLIENT_TIMEOUT)
    try:
        host, port = finder.discover_master(sentinel.service)
    finally:
        for client in finder.sentinels:
            client.close()
    return redis.Redis(host, port, socket_timeout=CLIENT_TIMEOUT, socket_connect_timeout=CLIENT_TIMEOUT)


def _mongo_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("mongo_server").url)


@pytest.fixture
def raw_index(request: pytest.FixtureRequest, store: AsyncStore, kind: str) -> Iterator[RawIndex]:
    """The user index of this test's store, read straight from its backend (index-keeping kinds)."""
    native = unwrap(store)
    raw: RawIndex
    if isinstance(native, (MemoryStore, AsyncMemoryStore)):
        raw = MemoryIndex(native)
    elif isinstance(native, (SqliteStore, AsyncSqliteStore)):
        raw = SqliteIndex(native.path)
    elif isinstance(native, (RedisStore, AsyncRedisStore)):
        raw = RedisIndex(_redis_client(request, kind), native.prefix)
    else:
        assert isinstance(native, (MongoStore, AsyncMongoStore)), kind
        raw = MongoIndex(_mongo_url(request), native)
    with contextlib.closing(raw):
        yield raw


@pytest.fixture
def raw_express(request: pytest.FixtureRequest, store: AsyncStore, kind: str) -> Iterator[RawExpress]:
    """The express-layout records of this test's store, as Node's store reads and writes them (express kinds)."""
    native = unwrap(store)
    raw: RawExpress
    if isinstance(native, (RedisStore, AsyncRedisStore)):
        assert native.layout == "connect-redis", kind
        raw = RedisExpress(_redis_client(request, kind), native.prefix)
    else:
        assert isinstance(native, (MongoStore, AsyncMongoStore)), kind
        assert native.layout == "connect-mongo", kind
        raw = MongoExpress(_mongo_url(request), native)
    with contextlib.closing(raw):
        yield raw
