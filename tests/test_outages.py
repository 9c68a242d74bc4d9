"""Store outages in the middle of load, through real servers: 503 with ``Retry-After``, then recovery.

A few concurrent clients hammer ``/counter`` (each with a session of its
own) through uvicorn + Starlette and gunicorn + Flask while the store goes
away, and comes back:

- **Redis / MongoDB stopped** (SIGTERM, as ``systemctl stop`` would): every
  request answers 200 or 503 with ``Retry-After`` and no traceback; once the
  server is back on the same port and data directory, each client's next
  request succeeds without restarting the app, and no counter goes back
  (nothing written before the outage is lost; Redis runs with
  ``appendonly yes``).
- **Redis / MongoDB frozen** (SIGSTOP, a hung server that still accepts
  connections): every request still completes, with 503, within the bound
  documented in docs/deployment.md; SIGCONT and the next request succeeds.
- **SQLite locked** (another connection holding ``BEGIN EXCLUSIVE``): writes
  wait ``busy_timeout`` and answer 503; once the lock is released they succeed.

No wall-clock limit is asserted (the machine may be slow): the tests assert
that every request completed, with which status, and print the latencies.
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from _mongo import MongoServer, require_secantus
from _redis import RedisServer
from _servers import ServerProcess, gunicorn_server, uvicorn_server, wait_for_port
from persession.signing import ItsdangerousSigner
from persession.stores.redis import DEFAULT_PREFIX

pytestmark = pytest.mark.server

SECRET = "outage-secret"
#: Concurrent clients, each with a session of its own.
CLIENTS = 4
#: Worker processes of the app server.
WORKERS = 2
#: A client's timeout: far above the documented bound (10 s per store call), so a hang shows as an error.
CLIENT_TIMEOUT = 60.0
#: How long a phase may take to show what it waits for before the test fails.
PHASE_TIMEOUT = 120.0
#: Requests a client sends at most (the load stops itself even if a test forgets to).
MAX_REQUESTS_PER_CLIENT = 5000
#: 503 answers each client must have seen before the outage ends.
OUTAGE_ANSWERS = 2
#: SQLite's busy_timeout for the lock test, in seconds (the default is 5).
SQLITE_BUSY_TIMEOUT = 2.0

Shell = tuple[str, str]
UVICORN: Shell = ("uvicorn", "starlette_app:app")
GUNICORN: Shell = ("gunicorn", "flask_app:app")
SHELLS = [pytest.param(UVICORN, id="uvicorn-starlette"), pytest.param(GUNICORN, id="gunicorn-flask")]


class LoggedServer(ServerProcess):
    """A server whose output goes to a file: under a flood of log lines (Flask logs a traceback for every
    request of an outage) a pipe that nobody reads fills up and blocks the server."""

    def __init__(self, server: ServerProcess, log: Path) -> None:
        super().__init__(server.argv, server.port, env=server.env, cwd=server.cwd)
        self.log = log

    def start(self) -> LoggedServer:
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> str:
        super().stop()
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def app_server(shell: Shell, store_url: str, log: Path) -> LoggedServer:
    """The test app of ``shell`` (not started) with ``WORKERS`` processes, keeping sessions at ``store_url``."""
    kind, app = shell
    env = {"PERSESSION_TEST_STORE": store_url, "PERSESSION_TEST_SECRET": SECRET, "PERSESSION_TEST_OPTIONS": "{}"}
    make = uvicorn_server if kind == "uvicorn" else gunicorn_server
    return LoggedServer(make(app, env=env, workers=WORKERS), log)


def sid_of(cookie: str) -> str:
    unsigned = ItsdangerousSigner([SECRET.encode()]).unsign(cookie)
    assert unsigned is not None
    return unsigned.sid


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = PHASE_TIMEOUT) -> None:
    """Poll ``predicate`` until it holds; fail saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.02)


# -- the load ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One request of a client: when it was sent and answered, and what came back."""

    started: float
    ended: float
    status: int | None = None
    counter: int | None = None
    retry_after: str | None = None
    body: str = ""
    pid: int | None = None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Client:
    """A client looping GET /counter with its own session cookie."""

    index: int
    cookie: str | None = None
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)


class Load:
    """``CLIENTS`` threads hammering ``/counter`` until :meth:`stop` (or their request cap)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.clients = [Client(index) for index in range(CLIENTS)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in self.clients]

    def _run(self, client: Client) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request: spread over workers
        with httpx.Client(base_url=self.base_url, timeout=CLIENT_TIMEOUT, limits=limits) as http:
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if self._stop.is_set():
                    return
                headers = {"Cookie": f"session={client.cookie}"} if client.cookie else {}
                answer = Answer(started=time.monotonic(), ended=0.0)
                try:
                    response = http.get("/counter", headers=headers)
                except httpx.HTTPError as error:
                    answer.error = f"{type(error).__name__}: {error}"
                else:
                    answer.status = response.status_code
                    answer.retry_after = response.headers.get("retry-after")
                    answer.body = response.text[:300]
                    if response.status_code == 200:
                        payload = response.json()
                        answer.counter, answer.pid = payload["counter"], payload["pid"]
                        cookie = response.cookies.get("session")
                        if cookie and client.cookie is None:
                            client.cookie = cookie
                        elif cookie and cookie != client.cookie:
                            answer.error = "the session cookie was replaced (a lost session)"
                answer.ended = time.monotonic()
                with client.lock:
                    client.answers.append(answer)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a client is still waiting for an answer"

    # -- what the phases wait for ------------------------------------------------------------------

    def each_has(self, predicate: Callable[[list[Answer]], bool]) -> bool:
        return all(predicate(client.snapshot()) for client in self.clients)

    def wait_warm(self, count: int = 5) -> None:
        """Every client has ``count`` successful answers."""
        wait_for(
            lambda: self.each_has(lambda answers: sum(a.status == 200 for a in answers) >= count),
            "every client got its first answers",
        )

    def wait_unavailable(self, since: float, count: int = OUTAGE_ANSWERS) -> None:
        """Every client got ``count`` answers of 503 to requests sent after ``since``."""
        wait_for(
            lambda: self.each_has(lambda answers: sum(a.status == 503 and a.started > since for a in answers) >= count),
            f"every client got {count} answers of 503 during the outage",
        )

    def wait_served(self, since: float) -> None:
        """Every client got an answer to a request sent after ``since``."""
        wait_for(
            lambda: self.each_has(lambda answers: any(a.started > since and a.ended for a in answers)),
            "every client got an answer after the store came back",
        )


@dataclass
class Outage:
    """The marks of one outage: the store went down, its recovery began, it was back."""

    began: float = 0.0
    ending: float = 0.0
    back: float = 0.0


def check_outage(load: Load, outage: Outage, label: str) -> None:
    """The assertions every outage shares; prints the figures."""
    every = [answer for client in load.clients for answer in client.snapshot()]
    errors = [a.error for a in every if a.error is not None]
    during = [a for a in every if outage.began < a.started and a.ended < outage.ending]
    unavailable = [a for a in every if a.status == 503]
    latencies = sorted(a.latency for a in unavailable)
    statuses: dict[str, int] = {}
    for answer in every:
        statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
    print(
        f"\n[outage] {label}: requests={len(every)} statuses={statuses} errors={len(errors)}"
        f" during_outage={len(during)} 503_latency_s min={latencies[0]:.3f}"
        f" median={statistics.median(latencies):.3f} max={latencies[-1]:.3f}"
    )
    assert not errors, errors[:5]
    assert all(a.status in (200, 503) for a in every), statuses
    assert all(a.status == 503 for a in during), [a.status for a in during]
    for answer in unavailable:
        assert answer.retry_after is not None
        assert answer.retry_after.isdigit()
        assert int(answer.retry_after) > 0
        assert "Session store unavailable" in answer.body
        assert "Traceback" not in answer.body
    for client in load.clients:
        answers = client.snapshot()
        counters = [a.counter for a in answers if a.status == 200]
        assert counters == sorted(set(counters)), f"client {client.index}: a counter went back: {counters}"
        before = [a.counter for a in answers if a.status == 200 and a.ended < outage.began]
        after = [a for a in answers if a.started > outage.back]
        assert before, f"client {client.index} got no answer before the outage"
        assert after, f"client {client.index} sent nothing after the outage"
        # The next request after the store is back succeeds, with the session intact.
        assert after[0].status == 200, f"client {client.index}: {after[0]}"
        assert after[0].counter is not None
        assert after[0].counter > max(c for c in before if c is not None)


# -- the stores -------------------------------------------------------------------------------------


def redis_stored_counters(server: RedisServer, load: Load) -> dict[int, int]:
    """Each client's counter as Redis holds it."""
    with server.client() as direct:
        found: dict[int, int] = {}
        for client in load.clients:
            assert client.cookie is not None
            value = direct.hget(DEFAULT_PREFIX + sid_of(client.cookie), ".counter")
            assert value is not None, f"client {client.index}'s session is gone from Redis"
            found[client.index] = int(value)
        return found


def last_acknowledged(load: Load, until: float) -> dict[int, int]:
    """Each client's highest counter answered with 200 before ``until``."""
    return {
        client.index: max(a.counter or 0 for a in client.snapshot() if a.status == 200 and a.ended < until)
        for client in load.clients
    }


def terminate_redis(server: RedisServer) -> None:
    """Stop redis-server with SIGTERM, as a service manager would, keeping its data directory."""
    process = server._process.process if server._process is not None else None
    assert process is not None
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(PHASE_TIMEOUT)


def signal_group(pid: int, sig: signal.Signals) -> None:
    os.killpg(pid, sig)


@contextlib.contextmanager
def persistent_redis(data_dir: Path) -> Iterator[RedisServer]:
    """A redis-server with an append-only file fsynced on every write, in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)]
    with RedisServer(args=args) as server:
        yield server


def mongo_pid(server: MongoServer) -> int:
    process = server._process.process if server._process is not None else None
    assert process is not None
    return process.pid


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[MongoServer]:
    """A SecantusDB server of the test's own (it gets stopped), its data in tmp_path."""
    require_secantus()
    with MongoServer(tmp_path / "mongo-data") as server:
        yield server


def mongo_url(server: MongoServer) -> tuple[str, str]:
    database = f"ps_outage_{uuid.uuid4().hex[:12]}"
    return f"{server.url}{database}", database


# -- 1. stopped --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_redis_stopped_under_load(shell: Shell, tmp_path: Path) -> None:
    """Redis stopped under load: 503 + Retry-After, no hang; restarted (same port, AOF), the next request succeeds."""
    with (
        persistent_redis(tmp_path / "redis-data") as store,
        app_server(shell, store.url, tmp_path / "app.log") as app,
        Load(app.url) as load,
    ):
        load.wait_warm()
        terminate_redis(store)
        outage = Outage(began=time.monotonic())  # from here on Redis is gone
        load.wait_unavailable(outage.began)
        outage.ending = time.monotonic()
        store.start()  # same port, same --dir: replays the append-only file
        outage.back = time.monotonic()
        acknowledged = last_acknowledged(load, outage.began)
        stored = redis_stored_counters(store, load)
        load.wait_served(outage.back)
        load.stop()
        assert app.process is not None
        assert app.process.poll() is None  # the app was never restarted
    check_outage(load, outage, f"redis stopped, {shell[0]}")
    print(f"[outage] acknowledged before the stop: {acknowledged}; in Redis after the restart: {stored}")
    assert all(stored[i] >= acknowledged[i] for i in acknowledged), (acknowledged, stored)


@pytest.mark.parametrize("shell", SHELLS)
def test_mongo_stopped_under_load(shell: Shell, mongo: MongoServer, tmp_path: Path) -> None:
    """MongoDB stopped under load: 503 + Retry-After, no hang; restarted (same port, data), the next one succeeds."""
    url, database = mongo_url(mongo)
    with app_server(shell, url, tmp_path / "app.log") as app, Load(app.url) as load:
        load.wait_warm()
        mongo.stop()
        outage = Outage(began=time.monotonic())
        load.wait_unavailable(outage.began)
        outage.ending = time.monotonic()
        mongo.start()  # same port, same data directory
        outage.back = time.monotonic()
        acknowledged = last_acknowledged(load, outage.began)
        stored = mongo_stored_counters(mongo, database, load)
        load.wait_served(outage.back)
        load.stop()
        assert app.process is not None
        assert app.process.poll() is None
    check_outage(load, outage, f"mongo stopped, {shell[0]}")
    print(f"[outage] acknowledged before the stop: {acknowledged}; in MongoDB after the restart: {stored}")
    assert all(stored[i] >= acknowledged[i] for i in acknowledged), (acknowledged, stored)


def mongo_stored_counters(server: MongoServer, database: str, load: Load) -> dict[int, int]:
    """Each client's counter as MongoDB holds it."""
    from pymongo import MongoClient

    found: dict[int, int] = {}
    with contextlib.closing(MongoClient(server.url, serverSelectionTimeoutMS=10000)) as client:
        sessions = client[database]["sessions"]
        for each in load.clients:
            assert each.cookie is not None
            document = sessions.find_one({"_id": sid_of(each.cookie)})
            assert document is not None, f"client {each.index}'s session is gone from MongoDB"
            found[each.index] = int(document["data"]["counter"])
    return found


# -- 2. frozen -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_redis_frozen_under_load(shell: Shell, tmp_path: Path) -> None:
    """Redis frozen (SIGSTOP): every request completes, with 503, within the documented bound; then SIGCONT recovers."""
    with (
        persistent_redis(tmp_path / "redis-data") as store,
        app_server(shell, store.url, tmp_path / "app.log") as app,
        Load(app.url) as load,
    ):
        load.wait_warm()
        signal_group(store.pid, signal.SIGSTOP)
        outage = Outage(began=time.monotonic())
        try:
            load.wait_unavailable(outage.began)
        finally:
            outage.ending = time.monotonic()
            signal_group(store.pid, signal.SIGCONT)
        outage.back = time.monotonic()
        acknowledged = last_acknowledged(load, outage.began)
        load.wait_served(outage.back)
        stored = redis_stored_counters(store, load)
        load.stop()
        assert app.process is not None
        assert app.process.poll() is None
    check_outage(load, outage, f"redis frozen, {shell[0]}")
    assert all(stored[i] >= acknowledged[i] for i in acknowledged), (acknowledged, stored)


@pytest.mark.parametrize("shell", SHELLS)
def test_mongo_frozen_under_load(shell: Shell, mongo: MongoServer, tmp_path: Path) -> None:
    """MongoDB frozen (SIGSTOP): every request completes, with 503, within the documented bound; SIGCONT recovers."""
    url, database = mongo_url(mongo)
    with app_server(shell, url, tmp_path / "app.log") as app, Load(app.url) as load:
        load.wait_warm()
        pid = mongo_pid(mongo)
        signal_group(pid, signal.SIGSTOP)
        outage = Outage(began=time.monotonic())
        try:
            load.wait_unavailable(outage.began)
        finally:
            outage.ending = time.monotonic()
            signal_group(pid, signal.SIGCONT)
        outage.back = time.monotonic()
        acknowledged = last_acknowledged(load, outage.began)
        load.wait_served(outage.back)
        stored = mongo_stored_counters(mongo, database, load)
        load.stop()
        assert app.process is not None
        assert app.process.poll() is None
    check_outage(load, outage, f"mongo frozen, {shell[0]}")
    assert all(stored[i] >= acknowledged[i] for i in acknowledged), (acknowledged, stored)


# -- 3. SQLite locked ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_sqlite_locked_under_load(shell: Shell, tmp_path: Path) -> None:
    """SQLite held by BEGIN EXCLUSIVE: writes wait busy_timeout then answer 503; released, the next request succeeds."""
    path = tmp_path / "sessions.db"
    url = f"sqlite:///{path}?busy_timeout={SQLITE_BUSY_TIMEOUT}"
    with app_server(shell, url, tmp_path / "app.log") as app, Load(app.url) as load:
        load.wait_warm()
        # The load's own write transactions hold the lock now and then: wait for a gap to take it.
        holder = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            outage = Outage(began=time.monotonic())
            try:
                load.wait_unavailable(outage.began)
            finally:
                outage.ending = time.monotonic()
                holder.execute("ROLLBACK")
            outage.back = time.monotonic()
            acknowledged = last_acknowledged(load, outage.began)
            load.wait_served(outage.back)
            load.stop()
        finally:
            holder.close()
        assert app.process is not None
        assert app.process.poll() is None
    check_outage(load, outage, f"sqlite locked (busy_timeout={SQLITE_BUSY_TIMEOUT}s), {shell[0]}")
    with contextlib.closing(sqlite3.connect(path)) as reader:
        rows = dict(reader.execute("SELECT id, data FROM persession_sessions").fetchall())
    stored = {}
    for client in load.clients:
        assert client.cookie is not None
        stored[client.index] = json.loads(rows[sid_of(client.cookie)])["counter"]
    print(f"[outage] acknowledged before the lock: {acknowledged}; in SQLite after it: {stored}")
    assert all(stored[i] >= acknowledged[i] for i in acknowledged), (acknowledged, stored)
