"""SQLite-only behaviour: the file, its location, locking, processes, threads and URLs."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _stores import HOUR, live
from persession.exceptions import ConfigError, StoreError, StoreUnavailable
from persession.records import Change, Record
from persession.stores import (
    AsyncMemoryStore,
    AsyncSqliteStore,
    MemoryStore,
    SqliteStore,
    default_sqlite_path,
    store_from_url,
)

TABLE = "persession_sessions"


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the store's file, in autocommit mode, closed on exit."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def raw_ids(path: Path, table: str = TABLE) -> set[str]:
    """Every id stored in ``table``, expired rows included."""
    with raw(path) as connection:
        return {row[0] for row in connection.execute(f"SELECT id FROM {table}")}  # noqa: S608  (test constant)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file path that does not exist yet."""
    return tmp_path / "sessions.db"


@pytest.fixture
def sync_store(db_path: Path) -> Iterator[SqliteStore]:
    """A synchronous SQLite store on ``db_path``, closed after the test."""
    store = SqliteStore(db_path)
    yield store
    store.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Unset the variables that choose the default path."""
    monkeypatch.delenv("PERSESSION_SQLITE_PATH", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return monkeypatch


# --- default location --------------------------------------------------------------------------


def test_default_path_honours_persession_sqlite_path(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PERSESSION_SQLITE_PATH wins over XDG_STATE_HOME."""
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    clean_env.setenv("PERSESSION_SQLITE_PATH", str(tmp_path / "explicit.db"))
    assert default_sqlite_path() == tmp_path / "explicit.db"


def test_default_path_uses_xdg_state_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without PERSESSION_SQLITE_PATH the file is $XDG_STATE_HOME/persession/sessions.db."""
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_sqlite_path() == tmp_path / "state" / "persession" / "sessions.db"


def test_default_path_falls_back_to_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without either variable the file is ~/.local/state/persession/sessions.db."""
    clean_env.setenv("HOME", str(tmp_path))
    assert default_sqlite_path() == tmp_path / ".local" / "state" / "persession" / "sessions.db"


def test_empty_variables_are_ignored(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty PERSESSION_SQLITE_PATH or XDG_STATE_HOME counts as unset."""
    clean_env.setenv("HOME", str(tmp_path))
    clean_env.setenv("PERSESSION_SQLITE_PATH", "")
    clean_env.setenv("XDG_STATE_HOME", "")
    assert default_sqlite_path() == tmp_path / ".local" / "state" / "persession" / "sessions.db"


def test_default_directory_is_created_on_first_use(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A store on the default path creates the missing directory when first used, not before."""
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    expected = tmp_path / "state" / "persession" / "sessions.db"
    store = SqliteStore()
    try:
        assert store.path == expected
        assert not expected.parent.exists()
        store.save("sid", live({"a": 1}))
        assert expected.is_file()
        assert raw_ids(expected) == {"sid"}
    finally:
        store.close()


# --- the file ----------------------------------------------------------------------------------


def test_file_uses_wal_journal_mode(sync_store: SqliteStore, db_path: Path) -> None:
    """The database file is in WAL mode once the store has used it."""
    sync_store.save("sid", live({"a": 1}))
    with raw(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_custom_table_is_used(db_path: Path) -> None:
    """Records go into the table named by ``table=``, and the default table is not created."""
    store = SqliteStore(db_path, table="my_sessions_2")
    try:
        store.save("sid", live({"a": 1}))
    finally:
        store.close()
    assert raw_ids(db_path, "my_sessions_2") == {"sid"}
    with raw(db_path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert TABLE not in tables


@pytest.mark.parametrize(
    "table",
    ["", "has space", "semi;colon", "x; DROP TABLE y", "1leading_digit", "dash-ed", 'quo"te', "a" * 64, "ünïcode"],
)
def test_invalid_table_name_is_refused(db_path: Path, table: str) -> None:
    """A table name that is not a plain SQL identifier raises ConfigError naming "table"."""
    with pytest.raises(ConfigError, match="table") as caught:
        SqliteStore(db_path, table=table)
    assert caught.value.option == "table"
    assert not db_path.exists()


def test_negative_busy_timeout_is_refused(db_path: Path) -> None:
    """A negative busy_timeout raises ConfigError naming "busy_timeout"."""
    with pytest.raises(ConfigError, match="busy_timeout") as caught:
        SqliteStore(db_path, busy_timeout=-1)
    assert caught.value.option == "busy_timeout"


# --- purging -----------------------------------------------------------------------------------


def test_purge_removes_expired_rows_only(db_path: Path) -> None:
    """purge() deletes exactly the expired rows and returns how many."""
    store = SqliteStore(db_path, purge_interval=HOUR)
    try:
        store.save("live", live({"a": 1}))  # the first write purges; later ones within the hour do not
        past = time.time() - 10
        for sid in ("old1", "old2"):
            store.save(sid, Record({"a": 1}, created=past - 100, accessed=past - 100, expires=past))
        assert raw_ids(db_path) == {"live", "old1", "old2"}
        assert store.purge() == 2
        assert raw_ids(db_path) == {"live"}
        assert store.purge() == 0
    finally:
        store.close()


def test_save_purges_every_purge_interval(db_path: Path) -> None:
    """A save purges expired rows once purge_interval has passed since the last purge, not sooner."""
    now = [1_000.0]
    store = SqliteStore(db_path, purge_interval=100, clock=lambda: now[0])
    try:
        store.save("live", Record({}, created=1_000, accessed=1_000, expires=9_000))  # purges at t=1000
        store.save("old", Record({}, created=1_000, accessed=1_000, expires=1_050))
        now[0] = 1_060.0  # "old" has expired, but only 60 s have passed since the last purge
        store.save("second", Record({}, created=1_060, accessed=1_060, expires=9_000))
        assert raw_ids(db_path) == {"live", "old", "second"}
        assert store.load("old") is None
        now[0] = 1_100.0  # 100 s since the last purge
        store.save("third", Record({}, created=1_100, accessed=1_100, expires=9_000))
        assert raw_ids(db_path) == {"live", "second", "third"}
    finally:
        store.close()


async def _purge_async(store: AsyncSqliteStore) -> int:
    try:
        return await store.purge()
    finally:
        await store.close()


@pytest.mark.anyio
async def test_async_purge_removes_expired_rows(db_path: Path) -> None:
    """The async flavour's purge() deletes expired rows and returns how many."""
    sync = SqliteStore(db_path, purge_interval=HOUR)
    try:
        sync.save("live", live({}))
        past = time.time() - 10
        sync.save("old", Record({}, created=past, accessed=past, expires=past))
    finally:
        sync.close()
    assert await _purge_async(AsyncSqliteStore(db_path)) == 1
    assert raw_ids(db_path) == {"live"}


# --- restart, close and reuse ------------------------------------------------------------------


def test_data_survives_a_restart(db_path: Path) -> None:
    """A new store object on the same file, after the first was closed, sees its records."""
    record = live({"user": 42, "name": "ünï"})
    first = SqliteStore(db_path)
    first.save("sid", record)
    first.close()
    second = SqliteStore(db_path)
    try:
        assert second.load("sid") == record
    finally:
        second.close()


@pytest.mark.anyio
async def test_async_data_survives_a_restart(db_path: Path) -> None:
    """A new async store on the same file, after the first was closed, sees its records."""
    record = live({"user": 42})
    first = AsyncSqliteStore(db_path)
    await first.save("sid", record)
    await first.close()
    second = AsyncSqliteStore(db_path)
    try:
        assert await second.load("sid") == record
    finally:
        await second.close()


def test_close_then_reuse(sync_store: SqliteStore) -> None:
    """A closed store reopens on next use and keeps working; closing twice is harmless."""
    record = live({"a": 1})
    sync_store.save("sid", record)
    sync_store.close()
    sync_store.close()
    assert sync_store.load("sid") == record
    assert sync_store.merge("sid", Change({"b": 2}), time.time() + HOUR) is True
    loaded = sync_store.load("sid")
    assert loaded is not None
    assert loaded.data == {"a": 1, "b": 2}


@pytest.mark.anyio
async def test_async_close_then_reuse(db_path: Path) -> None:
    """A closed async store restarts its thread on next use; closing twice is harmless."""
    store = AsyncSqliteStore(db_path)
    record = live({"a": 1})
    try:
        await store.close()  # before any use
        await store.save("sid", record)
        await store.close()
        await store.close()
        assert await store.load("sid") == record
        assert await store.touch("sid", time.time() + 2 * HOUR) is True
    finally:
        await store.close()


# --- threads -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_queries_run_on_the_store_thread(db_path: Path) -> None:
    """Every async verb runs its query on a "persession-sqlite" thread, never the event loop's."""
    seen: list[threading.Thread] = []

    def clock() -> float:
        # The store reads its clock inside each query function, on the thread that runs the query.
        seen.append(threading.current_thread())
        return time.time()

    store = AsyncSqliteStore(db_path, clock=clock)
    try:
        await store.save("sid", live({"a": 1}))
        await store.load("sid")
        await store.merge("sid", Change({"b": 2}), time.time() + HOUR)
        await store.touch("sid", time.time() + HOUR)
        await store.purge()
        store_threads = set(seen)
        loop_thread = threading.current_thread()
        assert len(seen) >= 5
        assert loop_thread not in store_threads
        assert all(thread.name.startswith("persession-sqlite") for thread in store_threads)
        assert len(store_threads) == 1
    finally:
        await store.close()
    (thread,) = store_threads
    assert not thread.is_alive()


# --- several processes -------------------------------------------------------------------------

CHILD = """
import sys, time
from persession.records import Change, Record
from persession.stores import SqliteStore

path, sid, worker, warm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "warm"
store = SqliteStore(path)
if warm:
    store.load(sid)  # open the connection before the start signal
print("ready", flush=True)
sys.stdin.readline()
now = time.time()
if not warm:  # each process creates, then merges into, a session of its own
    sid = f"{sid}-{worker}"
    store.save(sid, Record({"worker": worker}, created=now, accessed=now, expires=now + 3600))
failed = [i for i in range(50) if not store.merge(sid, Change({f"w{worker}-k{i}": i}), now + 3600)]
store.close()
sys.exit(f"{len(failed)} merges returned False" if failed else 0)
"""


def run_workers(db_path: Path, sid: str, *, warm: bool, count: int = 4) -> None:
    """Start ``count`` processes, release them together, and require each to succeed."""
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(db_path), sid, str(n), "warm" if warm else "cold"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for n in range(count)
        ]
        stack.callback(lambda: [worker.kill() for worker in workers if worker.poll() is None])
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n"
        for worker in workers:  # the start signal; communicate() then closes stdin
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            _, stderr = worker.communicate(timeout=60)
            assert worker.returncode == 0, stderr


def test_processes_merging_into_one_session_keep_every_key(sync_store: SqliteStore, db_path: Path) -> None:
    """Four processes each merging 50 distinct keys into one session leave all 200 keys."""
    sync_store.save("shared", live({"base": True}))
    run_workers(db_path, "shared", warm=True)
    loaded = sync_store.load("shared")
    assert loaded is not None
    expected = {"base": True, **{f"w{w}-k{i}": i for w in range(4) for i in range(50)}}
    assert loaded.data == expected


def test_processes_starting_on_a_fresh_file(db_path: Path) -> None:
    """Four processes first opening a file that does not exist yet, all at once, each write their session."""
    run_workers(db_path, "own", warm=False)
    store = SqliteStore(db_path)
    try:
        for w in range(4):
            loaded = store.load(f"own-{w}")
            assert loaded is not None
            assert loaded.data == {"worker": str(w), **{f"w{w}-k{i}": i for i in range(50)}}
    finally:
        store.close()
    assert raw_ids(db_path) == {f"own-{w}" for w in range(4)}


# --- error mapping -----------------------------------------------------------------------------


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection."""
    with raw(path) as connection:
        connection.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


def test_locked_database_raises_store_unavailable(db_path: Path) -> None:
    """A write blocked past busy_timeout raises StoreUnavailable with the sqlite3 error attached."""
    store = SqliteStore(db_path, busy_timeout=0.2)
    try:
        record = live({"a": 1})
        store.save("sid", record)
        with write_locked(db_path):
            with pytest.raises(StoreUnavailable) as caught:
                store.save("other", live({"b": 2}))
            assert isinstance(caught.value, StoreError)
            assert isinstance(caught.value.original_error, sqlite3.OperationalError)
            assert caught.value.__cause__ is caught.value.original_error
            with pytest.raises(StoreUnavailable):
                store.merge("sid", Change({"c": 3}), time.time() + HOUR)
            assert store.load("sid") == record  # WAL: readers are not blocked by the writer
        store.save("other", live({"b": 2}))  # the failed writes left no transaction open
        assert raw_ids(db_path) == {"sid", "other"}
        loaded = store.load("sid")
        assert loaded is not None
        assert loaded.data == {"a": 1}
    finally:
        store.close()


@pytest.mark.anyio
async def test_async_locked_database_raises_store_unavailable(db_path: Path) -> None:
    """The async flavour also turns a lock timeout into StoreUnavailable."""
    store = AsyncSqliteStore(db_path, busy_timeout=0.2)
    try:
        await store.save("sid", live({"a": 1}))
        with write_locked(db_path), pytest.raises(StoreUnavailable) as caught:
            await store.merge("sid", Change({"c": 3}), time.time() + HOUR)
        assert isinstance(caught.value.original_error, sqlite3.OperationalError)
        assert await store.merge("sid", Change({"c": 3}), time.time() + HOUR) is True
    finally:
        await store.close()


def test_first_use_of_a_locked_new_file_recovers(db_path: Path) -> None:
    """A store whose first connection meets a locked file raises StoreUnavailable, then works once it is free."""
    with raw(db_path) as connection:
        connection.execute("CREATE TABLE unrelated (x)")
    store = SqliteStore(db_path, busy_timeout=0.2)
    try:
        with write_locked(db_path), pytest.raises(StoreUnavailable):
            store.save("sid", live({"a": 1}))
        store.save("sid", live({"a": 1}))
        assert raw_ids(db_path) == {"sid"}
    finally:
        store.close()


def test_first_use_waits_for_a_writer_on_a_new_file(db_path: Path) -> None:
    """First opening a non-WAL file that another process is writing waits for the writer instead of failing."""
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")  # SQLite refuses the switch to WAL at once while this is held
    release = threading.Timer(0.2, other.execute, ("ROLLBACK",))
    store = SqliteStore(db_path, busy_timeout=5)
    try:
        release.start()
        store.save("sid", live({"a": 1}))
    finally:
        release.join()
        other.close()
        store.close()
    assert raw_ids(db_path) == {"sid"}
    with raw(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("{not json", id="invalid JSON"),
        pytest.param("[1, 2]", id="JSON array"),
        pytest.param('"a string"', id="JSON string"),
        pytest.param("", id="empty"),
        pytest.param(b"\xff\xfe\x00", id="invalid bytes"),
    ],
)
def test_malformed_row_loads_as_none_with_warning(
    sync_store: SqliteStore, db_path: Path, caplog: pytest.LogCaptureFixture, stored: str | bytes
) -> None:
    """A row whose data is not a JSON object loads as None and logs a WARNING on persession.security."""
    sync_store.save("sid-secret-value", live({"a": 1}))
    with raw(db_path) as connection:
        connection.execute(f"UPDATE {TABLE} SET data = ? WHERE id = ?", (stored, "sid-secret-value"))  # noqa: S608
    with caplog.at_level(logging.WARNING, logger="persession.security"):
        assert sync_store.load("sid-secret-value") is None
    warnings = [r for r in caplog.records if r.name == "persession.security" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "sid-secret-value" not in warnings[0].getMessage()


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.anyio
async def test_unopenable_path_raises_store_unavailable(tmp_path: Path, flavour: str) -> None:
    """A path under a regular file raises StoreUnavailable, not OSError."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "sessions.db"
    if flavour == "sync":
        store = SqliteStore(path)
        with pytest.raises(StoreUnavailable) as caught:
            store.load("sid")
        store.close()
    else:
        async_store = AsyncSqliteStore(path)
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await async_store.load("sid")
        finally:
            await async_store.close()
    assert not isinstance(caught.value, OSError)
    assert isinstance(caught.value.original_error, OSError)


def test_directory_as_path_raises_store_unavailable(tmp_path: Path) -> None:
    """A path that is a directory raises StoreUnavailable with the sqlite3 error attached."""
    store = SqliteStore(tmp_path)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.save("sid", live({}))
        assert isinstance(caught.value.original_error, sqlite3.OperationalError)
    finally:
        store.close()


# --- store_from_url ----------------------------------------------------------------------------


def _check_writes_to(store: Any, path: Path, table: str = TABLE) -> None:
    """Assert that ``store`` is a SqliteStore writing into ``table`` of ``path``, then close it."""
    try:
        assert isinstance(store, SqliteStore)
        store.save("sid", live({"a": 1}))
        assert raw_ids(path, table) == {"sid"}
    finally:
        store.close()


def test_url_absolute_path(tmp_path: Path) -> None:
    """sqlite:///abs/path opens that absolute file."""
    path = tmp_path / "abs.db"
    store = store_from_url(f"sqlite://{path}")
    assert isinstance(store, SqliteStore)
    assert store.path == path
    _check_writes_to(store, path)


def test_url_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:rel.db opens rel.db relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    _check_writes_to(store_from_url("sqlite:rel.db"), tmp_path / "rel.db")


def test_url_percent_encoded_path(tmp_path: Path) -> None:
    """Percent-escapes in the path are decoded."""
    path = tmp_path / "with space.db"
    _check_writes_to(store_from_url(f"sqlite://{tmp_path}/with%20space.db"), path)


@pytest.mark.parametrize("url", ["sqlite://", "SQLite://", "sqlite:"])
def test_url_without_path_uses_default(clean_env: pytest.MonkeyPatch, tmp_path: Path, url: str) -> None:
    """A sqlite URL with no path uses default_sqlite_path()."""
    path = tmp_path / "default.db"
    clean_env.setenv("PERSESSION_SQLITE_PATH", str(path))
    _check_writes_to(store_from_url(url), path)


def test_url_table_parameter(tmp_path: Path) -> None:
    """The table query parameter chooses the table."""
    path = tmp_path / "t.db"
    _check_writes_to(store_from_url(f"sqlite://{path}?table=from_url"), path, "from_url")


def test_url_busy_timeout_parameter(tmp_path: Path) -> None:
    """The busy_timeout query parameter sets how long a write waits for the lock (0.2 s, not the default 5 s)."""
    path = tmp_path / "b.db"
    store = store_from_url(f"sqlite://{path}?busy_timeout=0.2&purge_interval=60")
    try:
        store.save("sid", live({}))
        with write_locked(path):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.save("other", live({}))
            assert time.monotonic() - started < 2.5
    finally:
        store.close()


def test_url_keyword_options_override_query(tmp_path: Path) -> None:
    """Keyword options to store_from_url win over the URL's query parameters."""
    path = tmp_path / "k.db"
    _check_writes_to(store_from_url(f"sqlite://{path}?table=from_query", table="from_kwarg"), path, "from_kwarg")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite://{tmp}/x.db?colour=blue", id="unknown parameter"),
        pytest.param("sqlite://{tmp}/x.db?busy_timeout=soon", id="non-numeric busy_timeout"),
        pytest.param("sqlite://{tmp}/x.db?purge_interval=", id="empty purge_interval"),
        pytest.param("sqlite://host{tmp}/x.db", id="host"),
        pytest.param("sqlite://localhost{tmp}/x.db", id="localhost"),
        pytest.param("postgres://localhost/db", id="unknown scheme"),
        pytest.param("file://{tmp}/x.db", id="file scheme"),
        pytest.param("{tmp}/x.db", id="no scheme"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_url_raises_config_error(url: str, tmp_path: Path) -> None:
    """A malformed or unsupported URL raises ConfigError naming "url" and opens nothing."""
    with pytest.raises(ConfigError, match="url") as caught:
        store_from_url(url.format(tmp=tmp_path))
    assert caught.value.option == "url"
    assert not (tmp_path / "x.db").exists()


def test_non_string_url_raises_config_error() -> None:
    """A URL that is not a string raises ConfigError naming "url"."""
    with pytest.raises(ConfigError) as caught:
        store_from_url(Path("/x.db"))  # type: ignore[arg-type]
    assert caught.value.option == "url"


def test_url_memory() -> None:
    """memory:// gives a MemoryStore."""
    store = store_from_url("memory://")
    assert isinstance(store, MemoryStore)
    store.save("sid", live({"a": 1}))
    assert store.load("sid") is not None


# --- to_async twins ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.anyio
async def test_to_async_twin_shares_data(kind: str, db_path: Path) -> None:
    """The twin from to_async() reads and writes the same records as the sync store."""
    sync: MemoryStore | SqliteStore = MemoryStore() if kind == "memory" else SqliteStore(db_path, table="twins")
    twin = sync.to_async()
    assert isinstance(twin, AsyncMemoryStore if kind == "memory" else AsyncSqliteStore)
    try:
        record = live({"from": "sync"})
        sync.save("sid", record)
        assert await twin.load("sid") == record
        assert await twin.merge("sid", Change({"from": "async"}), time.time() + HOUR) is True
        loaded = sync.load("sid")
        assert loaded is not None
        assert loaded.data == {"from": "async"}
        await twin.save("new", live({"b": 2}), replaces="sid")
        assert sync.load("sid") is None
        assert sync.load("new") is not None
        sync.delete("new")
        assert await twin.load("new") is None
    finally:
        await twin.close()
        sync.close()
    if kind == "sqlite":
        assert raw_ids(db_path, "twins") == set()
