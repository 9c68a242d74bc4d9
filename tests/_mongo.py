"""MongoDB for the tests: a real server, and stores on a fresh database each.

The API, for ``tests/stores/test_mongo.py`` and the contract suite::

    from _mongo import MongoServer, make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)

    @pytest.mark.anyio
    async def test_something(mongo_server: MongoServer) -> None:
        async with make_mongo_store("async", "test_something") as store:  # AsyncMongoStore
            ...
        async with make_mongo_store("sync", "test_something") as store:   # MongoStore
            ...

- ``mongo_server`` (session-scoped fixture; import ``mongo_server_fixture`` to
  make it visible in a test module or conftest) is the server every test shares:
  ``$PERSESSION_MONGO_URL`` when set, else a SecantusDB server (``pip install
  secantusdb``, a MongoDB-wire server written in Python) started on a free
  127.0.0.1 port with its data in a temporary directory, and stopped at the end
  of the session. Without SecantusDB the tests that need it skip, or fail
  under ``CI``.
- ``make_mongo_store(flavour, namespace)`` is an async context manager
  yielding a :class:`~persession.stores.mongo.MongoStore` (``"sync"``) or an
  :class:`~persession.stores.mongo.AsyncMongoStore` (``"async"``) on a
  collection of a database of its own, named after ``namespace`` plus a random
  suffix, in ``layout=`` (default ``"persession"``, or ``"connect-mongo"``).
  The store sits on a client the factory creates (pass
  ``event_listeners=[...]`` or other client options as keywords); on exit it
  closes the store, drops that database and nothing else, and closes the
  client. Call it inside the test's event loop (``AsyncMongoClient`` is bound
  to one) while ``mongo_server`` is active, or pass ``url=`` yourself.
  The contract suite wraps a sync store with ``_stores.adapt``.
- ``replace_collection(store, wrap)`` puts ``wrap(collection)`` in place of a
  sync store's collection (to make it misbehave): the one place the tests
  reach into a Mongo store's privates.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import pytest

from _servers import IN_CI, ServerProcess, free_port
from persession.stores.mongo import AsyncMongoStore, Layout, MongoStore

#: Names an external server to use instead of starting SecantusDB, e.g. ``mongodb://127.0.0.1:27017/``.
ENV_URL = "PERSESSION_MONGO_URL"
INSTALL_HINT = "pip install secantusdb"
#: Client timeouts for test clients: short, so an outage shows up quickly.
CLIENT_OPTIONS: dict[str, Any] = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 2000}

Flavour = Literal["sync", "async"]
Wrapper = TypeVar("Wrapper")


def require_secantus() -> None:
    """Skip when SecantusDB is not installed, except under CI, where that is a failure."""
    if importlib.util.find_spec("secantus") is None:
        message = f"SecantusDB (a MongoDB-wire test server) is not installed: {INSTALL_HINT}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


class MongoServer:
    """A SecantusDB server in a subprocess on 127.0.0.1, its data in ``data_dir``.

    :meth:`stop` and :meth:`start` may be repeated: a restart uses the same port and
    the same data directory, as a restarted ``mongod`` would.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        require_secantus()
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self._process: ServerProcess | None = None

    @property
    def url(self) -> str:
        """``mongodb://127.0.0.1:<port>/``: no database, the tests name their own."""
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def external(self) -> bool:
        """False: this server can be stopped and restarted by a test."""
        return False

    def start(self) -> MongoServer:
        """Start the server and wait until it answers ``hello``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir.parent / f"{self.data_dir.name}.toml"
        config.touch()  # an empty config file: no auto-discovered secantusd.toml
        argv = [sys.executable, "-m", "secantus", "--config", str(config), "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--storage-path", str(self.data_dir), "--log-level", "WARNING"]
        self._process = ServerProcess(argv, self.port, cwd=self.data_dir.parent).start()
        try:
            wait_for_hello(self.url)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> str:
        """Stop the server (TERM, then KILL) and return what it printed."""
        process, self._process = self._process, None
        return process.stop() if process is not None else ""

    def __enter__(self) -> MongoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ExternalMongoServer:
    """A server named by ``$PERSESSION_MONGO_URL``: used, never started or stopped."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def external(self) -> bool:
        """True: tests that stop the server skip."""
        return True


def wait_for_hello(url: str, timeout: float = 20.0) -> None:
    """Block until the server at ``url`` answers ``hello``."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    deadline = time.monotonic() + timeout
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=500, connect=False)
    with contextlib.closing(client):
        while True:
            try:
                client.admin.command("hello")
                return
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


_shared: MongoServer | ExternalMongoServer | None = None


@pytest.fixture(scope="session", name="mongo_server")
def mongo_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer | ExternalMongoServer]:
    """The MongoDB server shared by the whole test session (see the module docs)."""
    global _shared
    external = os.environ.get(ENV_URL)
    if external:
        _shared = ExternalMongoServer(external)
        yield _shared
        _shared = None
        return
    with MongoServer(tmp_path_factory.mktemp("mongo") / "data") as server:
        _shared = server
        try:
            yield server
        finally:
            _shared = None


def _database_name(namespace: str) -> str:
    """A database name of its own for ``namespace``: safe characters, under MongoDB's 64-byte limit."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", namespace)[:40]
    return f"ps_{safe}_{uuid.uuid4().hex[:12]}"


@overload
def make_mongo_store(
    flavour: Literal["sync"],
    namespace: str,
    *,
    url: str | None = None,
    layout: Layout = "persession",
    **client_kwargs: Any,
) -> AbstractAsyncContextManager[MongoStore]: ...
@overload
def make_mongo_store(
    flavour: Literal["async"],
    namespace: str,
    *,
    url: str | None = None,
    layout: Layout = "persession",
    **client_kwargs: Any,
) -> AbstractAsyncContextManager[AsyncMongoStore]: ...
@overload
def make_mongo_store(
    flavour: Flavour,
    namespace: str,
    *,
    url: str | None = None,
    layout: Layout = "persession",
    **client_kwargs: Any,
) -> AbstractAsyncContextManager[MongoStore | AsyncMongoStore]: ...
def make_mongo_store(
    flavour: Flavour,
    namespace: str,
    *,
    url: str | None = None,
    layout: Layout = "persession",
    **client_kwargs: Any,
) -> AbstractAsyncContextManager[MongoStore | AsyncMongoStore]:
    """A store of ``flavour`` and ``layout`` on a fresh database named after ``namespace`` (see the module docs)."""
    if flavour not in ("sync", "async"):
        raise ValueError(f"flavour is 'sync' or 'async', not {flavour!r}")
    if url is None:
        if _shared is None:
            raise RuntimeError("request the mongo_server fixture before make_mongo_store(), or pass url=")
        url = _shared.url
    return _mongo_store(flavour, namespace, url, layout, {**CLIENT_OPTIONS, **client_kwargs})


@contextlib.asynccontextmanager
async def _mongo_store(
    flavour: Flavour, namespace: str, url: str, layout: Layout, client_kwargs: dict[str, Any]
) -> AsyncIterator[MongoStore | AsyncMongoStore]:
    from pymongo import AsyncMongoClient, MongoClient

    database = _database_name(namespace)
    if flavour == "sync":
        client: MongoClient[Any] = MongoClient(url, **client_kwargs)
        store = MongoStore(client[database]["sessions"], layout=layout)
        try:
            yield store
        finally:
            try:
                store.close()
                client.drop_database(database)
            finally:
                client.close()
    else:
        aclient: AsyncMongoClient[Any] = AsyncMongoClient(url, **client_kwargs)
        astore = AsyncMongoStore(aclient[database]["sessions"], layout=layout)
        try:
            yield astore
        finally:
            try:
                await astore.close()
                await aclient.drop_database(database)
            finally:
                await aclient.close()


def replace_collection(store: MongoStore, wrap: Callable[[Any], Wrapper]) -> Wrapper:
    """Make ``store`` use ``wrap(collection)`` from now on, and return it; the indexes are made first."""
    transport = store._transport
    transport._ensure_indexes()  # on the real collection: the wrapper sees only the verbs' own commands
    wrapper = wrap(transport.collection)
    transport.collection = wrapper  # type: ignore[assignment]
    return wrapper
