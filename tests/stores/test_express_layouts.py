"""The connect-redis and connect-mongo layouts, both flavours, on real servers.

What express-session and its stores read is checked end to end against Node in
``tests/test_express_interop.py``; this file checks the store side alone: the
stored shapes, the merges (atomic script on Redis, compare-and-swap on
MongoDB), the no-resurrection guard, malformed records, and the options.
What the layouts share with every store (and that they keep no user index
nor creation time) runs on every transport in the contract suite
(``test_contract*.py``, the ``connect-*`` kinds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from pymongo import monitoring

from _mongo import MongoServer, mongo_server_fixture, replace_collection  # noqa: F401  (the fixture)
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _stores import adapt
from persession import Change, ConfigError, Record, StoreError
from persession.codecs import COOKIE, iso_date, parse_iso_date
from persession.stores import store_from_url
from persession.stores.mongo import CAS_ATTEMPTS, AsyncMongoStore, MongoStore
from persession.stores.redis import AsyncRedisStore, RedisStore

pytestmark = [pytest.mark.server, pytest.mark.anyio]

SID = "abcdefghijklmnopqrstuvwxyz012345"
OTHER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ543210"
COOKIE_OBJECT = {"originalMaxAge": 3_600_000, "expires": None, "secure": False, "httpOnly": True, "path": "/"}


@dataclass
class Layout:
    """A store in an express layout, and raw access to what it stored."""

    kind: str
    #: The store itself, of either flavour.
    native: Any
    raw: Any
    prefix: str = ""
    #: The store's async protocols (a sync store through ``_stores.adapt``).
    store: Any = field(init=False)

    def __post_init__(self) -> None:
        self.store = adapt(self.native)

    def stored(self, sid: str) -> tuple[str, float] | None:
        """The stored JSON text and the store's expiry (Redis TTL, Mongo ``expires``)."""
        if self.kind == "redis":
            text = self.raw.get(self.prefix + sid)
            return None if text is None else (text.decode(), time.time() + self.raw.pttl(self.prefix + sid) / 1000)
        document = self.raw.find_one({"_id": sid})
        return None if document is None else (document["session"], document["expires"].timestamp())

    def plant(self, sid: str, text: str, ttl: float | None = 60) -> None:
        """Store ``text`` as Node would (connect-redis' SET EX, connect-mongo's upsert).

        ``ttl=None``: with no store expiry (connect-redis' ``disableTTL``, a
        connect-mongo document without ``expires``).
        """
        if self.kind == "redis":
            self.raw.set(self.prefix + sid, text, px=None if ttl is None else int(ttl * 1000))
        elif ttl is None:
            self.raw.update_one({"_id": sid}, {"$set": {"session": text}}, upsert=True)
        else:
            expires = datetime.fromtimestamp(time.time() + ttl, tz=timezone.utc)
            self.raw.update_one({"_id": sid}, {"$set": {"session": text, "expires": expires}}, upsert=True)

    def store_expiry(self, sid: str) -> float | None:
        """The store's own expiry of ``sid`` (Unix time), ``None`` when it keeps none (the key must exist)."""
        if self.kind == "redis":
            pttl = self.raw.pttl(self.prefix + sid)
            assert pttl != -2, "no such key"
            return None if pttl == -1 else time.time() + pttl / 1000
        document = self.raw.find_one({"_id": sid})
        assert document is not None, "no such document"
        return None if "expires" not in document else float(document["expires"].timestamp())

    def text(self, sid: str) -> str | None:
        """The stored JSON text of ``sid``."""
        if self.kind == "redis":
            raw = self.raw.get(self.prefix + sid)
            return None if raw is None else str(raw.decode())
        document = self.raw.find_one({"_id": sid})
        return None if document is None else str(document["session"])


@contextlib.asynccontextmanager
async def _redis_layout(server: RedisServer, flavour: str) -> AsyncIterator[Layout]:
    prefix = f"sess-{uuid.uuid4().hex[:10]}:"
    raw = server.client()
    store: Any = (RedisStore if flavour == "sync" else AsyncRedisStore).from_url(
        server.url, prefix=prefix, layout="connect-redis"
    )
    try:
        yield Layout("redis", store, raw, prefix)
    finally:
        result = store.close()
        if asyncio.iscoroutine(result):
            await result
        for key in raw.scan_iter(f"{prefix}*"):
            raw.delete(key)
        raw.close()


@contextlib.asynccontextmanager
async def _mongo_layout(server: MongoServer, flavour: str) -> AsyncIterator[Layout]:
    from pymongo import MongoClient

    database = f"layout_{uuid.uuid4().hex[:12]}"
    url = f"{server.url.rstrip('/')}/{database}?layout=connect-mongo"
    raw_client: MongoClient[dict[str, Any]] = MongoClient(server.url, tz_aware=True)
    store: Any = (MongoStore if flavour == "sync" else AsyncMongoStore).from_url(url)
    try:
        yield Layout("mongo", store, raw_client[database]["sessions"])
    finally:
        result = store.close()
        if asyncio.iscoroutine(result):
            await result
        raw_client.drop_database(database)
        raw_client.close()


@pytest.fixture(params=["redis-sync", "redis-async", "mongo-sync", "mongo-async"])
async def layout(request: pytest.FixtureRequest) -> AsyncIterator[Layout]:
    """A store in an express layout, of each backend and flavour."""
    kind, flavour = str(request.param).split("-")
    if kind == "redis":
        async with _redis_layout(request.getfixturevalue("redis_server"), flavour) as opened:
            yield opened
    else:
        async with _mongo_layout(request.getfixturevalue("mongo_server"), flavour) as opened:
            yield opened


def record(data: dict[str, Any], ttl: float = 60) -> Record:
    now = time.time()
    return Record(data, created=now, accessed=now, expires=now + ttl)


async def test_save_writes_express_sessions_json_with_the_cookie_first(layout: Layout) -> None:
    """A saved record is the JSON text of express-session's session: cookie first, its expiry the store's."""
    await layout.store.save(SID, record({"a": [1], COOKIE: dict(COOKIE_OBJECT), "é": "ü"}, ttl=3600))
    found = layout.stored(SID)
    assert found is not None
    text, store_expiry = found
    document = json.loads(text)
    assert list(document) == [COOKIE, "a", "é"]
    expiry = parse_iso_date(document[COOKIE]["expires"])
    assert expiry is not None
    assert abs(expiry - store_expiry) < 1
    loaded = await layout.store.load(SID)
    assert loaded is not None
    assert loaded.data == document
    assert abs(loaded.expires - store_expiry) < 1


async def test_merge_changes_only_its_keys_and_keeps_order(layout: Layout) -> None:
    """A merge splices in its keys (values byte for byte), deletes, appends, and moves the expiry."""
    stored = (
        '{"cookie":{"originalMaxAge":1000,"expires":"2020-01-01T00:00:00.000Z"},"f":1.0000000000000002,"e":[],"d":{}}'
    )
    layout.plant(SID, stored)
    expires = time.time() + 500
    assert await layout.store.merge(SID, Change(set={"e": [1], "n": {"x": []}}, deleted=frozenset({"d"})), expires)
    found = layout.stored(SID)
    assert found is not None
    text, store_expiry = found
    assert text.startswith('{"cookie":{"originalMaxAge":1000,"expires":"')
    assert text.endswith('"},"f":1.0000000000000002,"e":[1],"n":{"x":[]}}')
    assert json.loads(text)[COOKIE]["expires"] == iso_date(expires)
    assert abs(store_expiry - expires) < 1


async def test_concurrent_merges_of_different_keys_all_survive(layout: Layout) -> None:
    """Ten merges racing on one session, each setting its own key, all land (atomic script / CAS with retries)."""
    layout.plant(SID, json.dumps({COOKIE: COOKIE_OBJECT}))
    expires = time.time() + 60

    async def one(index: int) -> bool:
        change = Change(set={f"k{index}": index})
        if isinstance(layout.native, (RedisStore, MongoStore)):
            return bool(await asyncio.to_thread(layout.native.merge, SID, change, expires))
        return bool(await layout.store.merge(SID, change, expires))

    assert all(await asyncio.gather(*(one(i) for i in range(10))))
    loaded = await layout.store.load(SID)
    assert loaded is not None
    assert {key: loaded.data[key] for key in loaded.data if key != COOKIE} == {f"k{i}": i for i in range(10)}


async def test_merge_and_touch_never_resurrect_a_deleted_session(layout: Layout) -> None:
    """After a delete (a logout on either side), merge and touch report False and write nothing."""
    await layout.store.save(SID, record({COOKIE: dict(COOKIE_OBJECT), "a": 1}))
    await layout.store.delete(SID)
    assert not await layout.store.merge(SID, Change(set={"a": 2}), time.time() + 60)
    assert not await layout.store.touch(SID, time.time() + 60)
    assert await layout.store.load_touch(SID, 60, None) is None
    assert layout.stored(SID) is None


async def test_touch_moves_the_json_expiry_with_the_store_expiry(layout: Layout) -> None:
    """touch and load_touch move cookie.expires in the JSON and the TTL / expires field together."""
    await layout.store.save(SID, record({COOKIE: dict(COOKIE_OBJECT)}, ttl=30))
    assert await layout.store.touch(SID, time.time() + 900)
    touched = await layout.store.load_touch(SID, 1800, None)
    assert touched is not None
    found = layout.stored(SID)
    assert found is not None
    json_expiry = parse_iso_date(json.loads(found[0])[COOKIE]["expires"])
    assert json_expiry is not None
    assert abs(json_expiry - found[1]) < 1
    assert abs(touched.expires - found[1]) < 1
    assert found[1] > time.time() + 1700


async def test_a_browser_session_cookie_keeps_a_null_expiry(layout: Layout) -> None:
    """A record whose cookie has no maxAge keeps expires null; only the store's expiry moves."""
    layout.plant(SID, '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"a":1}')
    assert await layout.store.touch(SID, time.time() + 900)
    found = layout.stored(SID)
    assert found is not None
    assert json.loads(found[0])[COOKIE]["expires"] is None
    assert found[1] > time.time() + 800


def _without_store_expiry(expires: Any) -> str:
    cookie: dict[str, Any] = {"originalMaxAge": 3_600_000, "httpOnly": True, "path": "/"}
    if expires != "absent":
        cookie["expires"] = expires
    return json.dumps({COOKIE: cookie, "passport": {"user": "u"}}, separators=(",", ":"))


@pytest.mark.parametrize(
    ("expires", "lives"),
    [
        pytest.param(lambda: iso_date(time.time() + 120), True, id="cookie expires ahead"),
        pytest.param(lambda: None, True, id="null: a browser-session cookie"),
        pytest.param(lambda: "absent", True, id="no expires member"),
        pytest.param(lambda: iso_date(time.time() - 1), False, id="cookie expired"),
        pytest.param(lambda: "tomorrow", False, id="not a date"),
        pytest.param(lambda: "2999-01-01T00:00:00Z", False, id="not Date#toJSON's text"),
        pytest.param(lambda: 4_102_444_800_000, False, id="a number"),
    ],
)
async def test_a_record_with_no_store_expiry_lives_until_its_cookie_expires(
    layout: Layout, expires: Any, lives: bool
) -> None:
    """No TTL (disableTTL) or no expires field: the cookie's expires decides; every verb applies the same rule.

    A dead one loads as nothing and is never written again (merge, touch and
    load_touch leave it as it is); a live one loads, and a write gives it a
    store expiry.
    """
    stamp = expires()
    text = _without_store_expiry(stamp)
    layout.plant(SID, text, ttl=None)
    loaded = await layout.store.load(SID)
    if not lives:
        assert loaded is None
        assert not await layout.store.merge(SID, Change(set={"a": 1}), time.time() + 60)
        assert not await layout.store.touch(SID, time.time() + 60)
        assert await layout.store.load_touch(SID, 60, None) is None
        assert layout.text(SID) == text
        assert layout.store_expiry(SID) is None
        return
    assert loaded is not None
    expected = parse_iso_date(stamp) if isinstance(stamp, str) else None
    if expected is None:
        assert loaded.expires == math.inf
    else:
        assert abs(loaded.expires - expected) < 0.001
    assert loaded.data["passport"] == {"user": "u"}
    assert await layout.store.merge(SID, Change(set={"a": 1}), time.time() + 600)
    store_expiry = layout.store_expiry(SID)
    assert store_expiry is not None
    assert store_expiry > time.time() + 500


async def test_the_store_expiry_wins_over_the_cookies(layout: Layout) -> None:
    """A TTL or an expires field wins over a past cookie.expires (connect-*'s touch moves only the store's)."""
    layout.plant(SID, _without_store_expiry(iso_date(time.time() - 3600)), ttl=60)
    loaded = await layout.store.load(SID)
    assert loaded is not None
    assert abs(loaded.expires - (time.time() + 60)) < 2


@pytest.mark.parametrize("text", ['{"a":1}', "[1,2]", "not json", '{"cookie":5}'])
async def test_malformed_records_load_as_nothing_and_are_left_alone(
    layout: Layout, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A value that is not an express-session record loads as None, is never merged into, and is logged."""
    layout.plant(SID, text)
    assert await layout.store.load(SID) is None
    assert not await layout.store.merge(SID, Change(set={"b": 2}), time.time() + 60)
    found = layout.stored(SID)
    assert found is not None
    assert found[0] == text
    assert "malformed" in caplog.text


async def test_save_replacing_an_old_id_deletes_it(layout: Layout) -> None:
    """save(replaces=old) (a login's regenerate) writes the new record and deletes the old one."""
    await layout.store.save(OTHER, record({COOKIE: dict(COOKIE_OBJECT)}))
    await layout.store.save(SID, record({COOKIE: dict(COOKIE_OBJECT), "passport": {"user": "a"}}), replaces=OTHER)
    assert layout.stored(OTHER) is None
    assert await layout.store.load(SID) is not None


# -- backend specifics and options -------------------------------------------------------------------


def test_redis_layout_defaults_to_connect_redis_prefix(redis_server: RedisServer) -> None:
    """The connect-redis layout's default prefix is connect-redis' 'sess:'; the URL may name the layout."""
    store = store_from_url(f"{redis_server.url}?layout=connect-redis")
    try:
        assert isinstance(store, RedisStore)
        assert (store.layout, store.prefix) == ("connect-redis", "sess:")
        twin = store.to_async()
        assert (twin.layout, twin.prefix) == ("connect-redis", "sess:")
    finally:
        store.close()
    assert RedisStore(redis.Redis()).prefix == "persession:"


def test_layout_options_are_validated(redis_server: RedisServer, mongo_server: Any) -> None:
    """An unknown layout, or a URL and a keyword that disagree, raise ConfigError naming 'layout'."""
    with pytest.raises(ConfigError, match="layout"):
        RedisStore(redis.Redis(), layout="connect-mongo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="layout"):
        store_from_url(f"{redis_server.url}?layout=connect-redis", layout="persession")
    with pytest.raises(ConfigError, match="layout"):
        store_from_url(f"{mongo_server.url.rstrip('/')}/db?layout=connect-redis")


class _CreateIndexes(monitoring.CommandListener):
    """The index documents of every createIndexes command a client sends, as ordered item lists."""

    def __init__(self) -> None:
        self.sent: list[list[tuple[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "createIndexes":
            self.sent += [[(k, dict(v) if k == "key" else v) for k, v in i.items()] for i in event.command["indexes"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


#: connect-mongo's createIndex({expires: 1}, {background: true, expireAfterSeconds: 0}) as the Node
#: driver sends it (checked against the real one in tests/test_express_interop.py).
CONNECT_MONGO_INDEX = [("background", True), ("expireAfterSeconds", 0), ("name", "expires_1"), ("key", {"expires": 1})]


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_mongo_layout_creates_connect_mongos_ttl_index(mongo_server: Any, flavour: str) -> None:
    """The connect-mongo layout sends connect-mongo's TTL index document: its options, in its order, nothing else."""
    from pymongo import MongoClient

    listener = _CreateIndexes()
    database = f"layout_{uuid.uuid4().hex[:12]}"
    url = f"{mongo_server.url.rstrip('/')}/{database}?layout=connect-mongo"
    store: Any = (MongoStore if flavour == "sync" else AsyncMongoStore).from_url(url, event_listeners=[listener])
    raw: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url, tz_aware=True)
    try:
        layout = Layout("mongo", store, raw[database]["sessions"])
        await layout.store.save(SID, record({COOKIE: dict(COOKIE_OBJECT)}))
        assert listener.sent == [CONNECT_MONGO_INDEX]
        indexes = {index["name"]: index for index in layout.raw.list_indexes()}
        assert set(indexes) == {"_id_", "expires_1"}
        spec = indexes["expires_1"]
        assert (spec["key"], spec["expireAfterSeconds"], spec["background"]) == ({"expires": 1}, 0, True)
        assert set(layout.raw.find_one({"_id": SID})) == {"_id", "session", "expires"}
    finally:
        result = store.close()
        if asyncio.iscoroutine(result):
            await result
        raw.drop_database(database)
        raw.close()


class _AlwaysRaced:
    """A collection whose compare-and-swap never matches: another writer always got there first."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def update_one(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1

        class _Result:
            matched_count = 0

        return _Result()


async def test_mongo_merge_gives_up_after_bounded_retries(mongo_server: Any) -> None:
    """A merge that loses the compare-and-swap CAS_ATTEMPTS times raises StoreError instead of looping."""
    async with _mongo_layout(mongo_server, "sync") as opened:
        opened.plant(SID, json.dumps({COOKIE: COOKIE_OBJECT}))
        store: MongoStore = opened.native
        raced = replace_collection(store, _AlwaysRaced)
        with pytest.raises(StoreError, match="merges in a row"):
            store.merge(SID, Change(set={"a": 1}), time.time() + 60)
        assert raced.attempts == CAS_ATTEMPTS
