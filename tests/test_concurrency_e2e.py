"""Concurrency and outages through real servers: several worker processes on one session, and Redis going away.

- 200 concurrent requests, each setting its own key of one session, through
  uvicorn + Starlette and gunicorn + Flask (4 worker processes each), on
  SQLite, Redis and MongoDB: every request answers 200 and no key is lost.
- A Redis server killed under a running app: session routes answer 503 with
  ``Retry-After`` (no traceback), session-free routes keep working, and once
  Redis is back on the same port (same data) the app carries on without a
  restart and without losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from _http import session_cookie
from _mongo import ExternalMongoServer, MongoServer, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _servers import ServerProcess, gunicorn_server, uvicorn_server
from persession.signing import ItsdangerousSigner
from persession.stores.redis import DEFAULT_PREFIX

pytestmark = pytest.mark.server

SECRET = "concurrency-secret"
#: Concurrent requests in one burst, each setting a key of its own.
REQUESTS = 200
#: Worker processes behind each server in the burst test.
WORKERS = 4
#: A generous bound for one request of the burst (4 workers share 2 cores).
BURST_TIMEOUT = 60.0
#: A bound for one request during the Redis outage: the store gives up within (1 + 1 retry) * 2 s.
OUTAGE_TIMEOUT = 15.0
#: The Redis database the burst test uses on the shared server (the other tests use 0).
REDIS_DB = 7

Shell = tuple[str, str]
UVICORN: Shell = ("uvicorn", "starlette_app:app")
GUNICORN: Shell = ("gunicorn", "flask_app:app")
SHELLS = [pytest.param(UVICORN, id="uvicorn-starlette"), pytest.param(GUNICORN, id="gunicorn-flask")]
STORES = ["sqlite", "redis", "mongo"]


def server_for(shell: Shell, store_url: str, *, workers: int) -> ServerProcess:
    """A server of ``shell`` (not started) with ``workers`` processes, keeping sessions at ``store_url``."""
    kind, app = shell
    env = {"PERSESSION_TEST_STORE": store_url, "PERSESSION_TEST_SECRET": SECRET, "PERSESSION_TEST_OPTIONS": "{}"}
    make = uvicorn_server if kind == "uvicorn" else gunicorn_server
    return make(app, env=env, workers=workers)


def sid_of(cookie: str) -> str:
    unsigned = ItsdangerousSigner([SECRET.encode()]).unsign(cookie)
    assert unsigned is not None
    return unsigned.sid


def with_path(url: str, path: str) -> str:
    """``url`` with its path replaced by ``path`` (query kept): another Redis db, another Mongo database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fresh_client(base_url: str, timeout: float) -> httpx.Client:
    """A client that opens a new connection per request (so requests spread over the workers)."""
    return httpx.Client(base_url=base_url, timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))


# -- the store each burst case uses -----------------------------------------------------------


@dataclass
class StoreCase:
    """A fresh store for one test: its URL, and the session ids the test created there (deleted afterwards)."""

    kind: str
    url: str
    session_ids: list[str] = field(default_factory=list)


@pytest.fixture
def store_case(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreCase]:
    """A fresh store of kind ``store``; what the test wrote there is removed afterwards.

    The Redis and Mongo servers are the session's shared ones, requested only by the cases that need them.
    """
    if store == "sqlite":
        yield StoreCase(store, f"sqlite:///{(tmp_path / 'sessions.db').resolve()}")
    elif store == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        case = StoreCase(store, with_path(server.url, f"/{REDIS_DB}"))
        yield case
        # Nothing is flushed: delete only the keys of this test's sessions.
        if case.session_ids:
            with redis.Redis.from_url(case.url, socket_timeout=5, socket_connect_timeout=5) as client:
                client.delete(*(DEFAULT_PREFIX + sid for sid in case.session_ids))
    else:
        from pymongo import MongoClient

        mongo: MongoServer | ExternalMongoServer = request.getfixturevalue("mongo_server")
        database = f"ps_concurrency_{uuid.uuid4().hex[:12]}"
        yield StoreCase(store, with_path(mongo.url, f"/{database}"))
        with contextlib.closing(MongoClient(mongo.url, serverSelectionTimeoutMS=5000)) as client:
            client.drop_database(database)


# -- 1. many concurrent requests on one session, several processes ------------------------------


async def burst(base_url: str, cookie: str) -> list[httpx.Response | BaseException]:
    """``REQUESTS`` concurrent ``/set?key=k<i>&value=<i>`` requests with ``cookie``, each on its own connection."""
    limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS + 10)
    headers = {"Cookie": f"session={cookie}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=BURST_TIMEOUT, limits=limits, headers=headers) as client:
        requests = (client.get("/set", params={"key": f"k{i}", "value": str(i)}) for i in range(REQUESTS))
        return await asyncio.gather(*requests, return_exceptions=True)


def describe_errors(results: list[httpx.Response | BaseException]) -> list[str]:
    """One line per failed request of a burst: its status and body, or its exception."""
    errors = []
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            errors.append(f"k{i}: {type(result).__name__}: {result}")
        elif result.status_code != 200:
            errors.append(f"k{i}: {result.status_code} {result.text[:200]!r}")
    return errors


def pids_of(results: list[httpx.Response | BaseException]) -> set[int]:
    return {r.json()["pid"] for r in results if isinstance(r, httpx.Response) and r.status_code == 200}


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("shell", SHELLS)
def test_concurrent_writes_to_one_session_lose_nothing(shell: Shell, store: str, store_case: StoreCase) -> None:
    """200 concurrent requests setting distinct keys of one session through 4 workers all answer 200; no key is lost."""
    with (
        server_for(shell, store_case.url, workers=WORKERS) as server,
        fresh_client(server.url, BURST_TIMEOUT) as client,
    ):
        created = client.get("/set", params={"key": "init", "value": "1"})
        assert created.status_code == 200, created.text
        cookie = session_cookie(created)
        assert cookie is not None
        store_case.session_ids.append(sid_of(cookie))

        results = asyncio.run(burst(server.url, cookie))
        errors, pids, bursts = describe_errors(results), pids_of(results), 1
        if len(pids) < 2:  # the OS handed every connection to one worker: once more, now all are up
            retried = asyncio.run(burst(server.url, cookie))
            errors, pids, bursts = errors + describe_errors(retried), pids | pids_of(retried), 2

        final = client.get("/get", headers={"Cookie": f"session={cookie}"})
    assert final.status_code == 200, final.text
    data = final.json()["session"]
    expected = {"init": "1", **{f"k{i}": str(i) for i in range(REQUESTS)}}
    lost = sorted((k for k in expected if data.get(k) != expected[k]), key=lambda k: (len(k), k))
    figure = (
        f"store={store} shell={shell[0]} requests={REQUESTS * bursts} errors={len(errors)} lost={len(lost)}"
        f" workers_seen={len(pids)} bursts={bursts}"
    )
    print(f"\n[concurrency] {figure}")
    assert not errors, f"{figure}; first errors: {errors[:5]}"
    assert not lost, f"{figure}; lost keys: {lost[:20]}"
    assert data == expected, f"{figure}; unexpected keys: {sorted(set(data) - set(expected))}"
    assert len(pids) > 1, f"{figure}: every response came from one worker process ({pids})"


# -- 2. Redis goes away and comes back ------------------------------------------------------------


def refuses_connections(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("shell", SHELLS)
def test_redis_outage_answers_503_and_recovers_without_restart(shell: Shell, tmp_path: Path) -> None:
    """Redis killed: session routes answer 503, static ones 200; Redis back, the counter goes on, no app restart."""
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    # An append-only file fsynced on every write, in tmp_path: what was written before the crash survives it.
    persistent = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)]
    with (
        RedisServer(args=persistent) as redis_server,
        server_for(shell, redis_server.url, workers=2) as app,
        fresh_client(app.url, OUTAGE_TIMEOUT) as client,
    ):
        first = client.get("/counter")
        assert first.status_code == 200, first.text
        cookie = session_cookie(first)
        assert cookie is not None
        headers = {"Cookie": f"session={cookie}"}
        before = [first.json()["counter"]] + [
            client.get("/counter", headers=headers).json()["counter"] for _ in range(3)
        ]
        assert before == [1, 2, 3, 4]

        redis_server.kill()  # SIGKILL: a crash, no chance to say goodbye
        assert refuses_connections(redis_server.port)

        during = [client.get("/counter", headers=headers) for _ in range(4)]
        static = [client.get("/static"), client.get("/static", headers=headers)]

        redis_server.start()  # same port, same --dir: replays the append-only file
        after = client.get("/counter", headers=headers)
        seen = client.get("/get", headers=headers)
        with redis_server.client() as direct:
            stored = direct.hget(DEFAULT_PREFIX + sid_of(cookie), ".counter")

    for response in during:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        assert int(response.headers["retry-after"]) > 0
        assert "set-cookie" not in response.headers  # the client keeps its cookie
        assert "Traceback" not in response.text
        assert "redis" not in response.text.lower()
        assert "Session store unavailable" in response.text
    for response in static:
        assert response.status_code == 200
        assert response.text == "no session here"
    assert after.status_code == 200, after.text
    assert after.json()["counter"] == 5
    assert seen.json()["session"] == {"counter": 5}
    assert stored == b"5"
