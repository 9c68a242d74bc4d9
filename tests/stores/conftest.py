"""The parametrised ``store`` fixture: every store kind, both flavours, one async protocol.

The contract suite is written once against :class:`~persession.stores.AsyncStore`.
A synchronous store is wrapped by ``_stores.adapt`` in a test-only
``SyncAdapter``, whose ``async`` methods call the sync ones, so the same test
body checks both twins and drift between them shows up as a failure.

To add a kind (Redis, MongoDB), add a factory to :data:`FACTORIES`: a callable
taking the fixture request and a fresh ``tmp_path`` and returning an async
context manager that yields a ready store and closes it on exit. Marks for the
kind (``pytest.mark.redis``) go in :data:`MARKS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import REDIS_FACTORY_IDS, redis_contract_factories, redis_servers_fixture  # noqa: F401  (the fixture)
from _stores import adapt
from persession.stores import AsyncMemoryStore, AsyncSqliteStore, AsyncStore, MemoryStore, SqliteStore

#: Builds a store for one test: ``(request, tmp_path) -> async context manager``.
StoreFactory = Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[AsyncStore]]


@contextlib.asynccontextmanager
async def _closing(store: AsyncStore) -> AsyncIterator[AsyncStore]:
    try:
        yield store
    finally:
        await store.close()


def _memory_sync(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[AsyncStore]:
    return _closing(adapt(MemoryStore()))


def _memory_async(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[AsyncStore]:
    return _closing(AsyncMemoryStore())


def _sqlite_sync(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[AsyncStore]:
    return _closing(adapt(SqliteStore(tmp_path / "sessions.db")))


def _sqlite_async(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[AsyncStore]:
    return _closing(AsyncSqliteStore(tmp_path / "sessions.db"))


#: Every store kind the contract suite runs against, by test id.
FACTORIES: dict[str, StoreFactory] = {
    "memory-sync": _memory_sync,
    "memory-async": _memory_async,
    "sqlite-sync": _sqlite_sync,
    "sqlite-async": _sqlite_async,
}


def _mongo(flavour: str) -> StoreFactory:
    @contextlib.asynccontextmanager
    async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncStore]:
        request.getfixturevalue("mongo_server")
        async with make_mongo_store("sync" if flavour == "sync" else "async", "contract") as opened:
            yield adapt(opened)

    return open_store


FACTORIES.update(redis_contract_factories(adapt))
FACTORIES["mongo-sync"] = _mongo("sync")
FACTORIES["mongo-async"] = _mongo("async")

#: Marks for kinds that need a server process.
MARKS: dict[str, Collection[pytest.MarkDecorator]] = {
    kind: [pytest.mark.server] for kind in (*REDIS_FACTORY_IDS, "mongo-sync", "mongo-async")
}

# Built once, when this conftest is imported: register new kinds in FACTORIES and MARKS above this line.
STORE_PARAMS = [pytest.param(kind, id=kind, marks=MARKS.get(kind, ())) for kind in FACTORIES]


@pytest.fixture(params=STORE_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncStore]:
    """A fresh, empty store of each kind, closed after the test."""
    async with FACTORIES[request.param](request, tmp_path) as opened:
        yield opened
