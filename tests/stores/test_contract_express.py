"""The express layouts (connect-redis, connect-mongo): what both keep, on every transport and flavour.

The records are express-session's JSON, shared with Node: the ``raw_express``
fixture (``conftest.py``) reads and plants them as connect-redis or
connect-mongo would, behind the store's back. The tests run on every kind
whose records carry express-session's ``cookie`` member: connect-redis on its
own connections, on a client passed in, on Cluster and on Sentinel, and
connect-mongo, each sync and async. What each backend alone does (prefixes,
options, MongoDB's TTL index, bounded compare-and-swap retries) is in
``test_express_layouts.py``; what Node reads back, in ``tests/test_express_interop.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest

from _stores import RawExpress, unwrap
from persession import Change, Record
from persession.codecs import COOKIE, iso_date, parse_iso_date
from persession.stores import AsyncRollingLoad, AsyncStore

pytestmark = [pytest.mark.anyio, pytest.mark.expects(reserved_keys=frozenset({COOKIE}))]

SID = "abcdefghijklmnopqrstuvwxyz012345"
OTHER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ543210"
COOKIE_OBJECT = {"originalMaxAge": 3_600_000, "expires": None, "secure": False, "httpOnly": True, "path": "/"}


def record(data: dict[str, Any], ttl: float = 60) -> Record:
    now = time.time()
    return Record(data, created=now, accessed=now, expires=now + ttl)


def rolling(store: AsyncStore) -> AsyncRollingLoad:
    """The store as an ``AsyncRollingLoad``: both express layouts are one."""
    assert isinstance(store, AsyncRollingLoad)
    return store


async def test_save_writes_express_sessions_json_with_the_cookie_first(
    store: AsyncStore, raw_express: RawExpress
) -> None:
    """A saved record is the JSON text of express-session's session: cookie first, its expiry the store's."""
    await store.save(SID, record({"a": [1], COOKIE: dict(COOKIE_OBJECT), "é": "ü"}, ttl=3600))
    found = raw_express.stored(SID)
    assert found is not None
    text, store_expiry = found
    document = json.loads(text)
    assert list(document) == [COOKIE, "a", "é"]
    expiry = parse_iso_date(document[COOKIE]["expires"])
    assert expiry is not None
    assert abs(expiry - store_expiry) < 1
    loaded = await store.load(SID)
    assert loaded is not None
    assert loaded.data == document
    assert abs(loaded.expires - store_expiry) < 1


async def test_merge_changes_only_its_keys_and_keeps_order(store: AsyncStore, raw_express: RawExpress) -> None:
    """A merge splices in its keys (values byte for byte), deletes, appends, and moves the expiry."""
    stored = (
        '{"cookie":{"originalMaxAge":1000,"expires":"2020-01-01T00:00:00.000Z"},"f":1.0000000000000002,"e":[],"d":{}}'
    )
    raw_express.plant(SID, stored)
    expires = time.time() + 500
    assert await store.merge(SID, Change(set={"e": [1], "n": {"x": []}}, deleted=frozenset({"d"})), expires)
    found = raw_express.stored(SID)
    assert found is not None
    text, store_expiry = found
    assert text.startswith('{"cookie":{"originalMaxAge":1000,"expires":"')
    assert text.endswith('"},"f":1.0000000000000002,"e":[1],"n":{"x":[]}}')
    assert json.loads(text)[COOKIE]["expires"] == iso_date(expires)
    assert abs(store_expiry - expires) < 1


async def test_concurrent_merges_of_different_keys_all_survive(store: AsyncStore, raw_express: RawExpress) -> None:
    """Ten merges racing on one session, each setting its own key, all land (atomic script / CAS with retries).

    Ten stays within connect-mongo's ``CAS_ATTEMPTS``; a sync store merges
    from ten threads at once.
    """
    raw_express.plant(SID, json.dumps({COOKIE: COOKIE_OBJECT}))
    expires = time.time() + 60
    native = unwrap(store)

    async def one(index: int) -> bool:
        change = Change(set={f"k{index}": index})
        if native is not store:  # a sync store in its adapter: threads, not one event loop
            return bool(await asyncio.to_thread(native.merge, SID, change, expires))
        return bool(await store.merge(SID, change, expires))

    assert all(await asyncio.gather(*(one(i) for i in range(10))))
    loaded = await store.load(SID)
    assert loaded is not None
    assert {key: loaded.data[key] for key in loaded.data if key != COOKIE} == {f"k{i}": i for i in range(10)}


async def test_merge_and_touch_never_resurrect_a_deleted_session(store: AsyncStore, raw_express: RawExpress) -> None:
    """After a delete (a logout on either side), merge and touch report False and write nothing."""
    await store.save(SID, record({COOKIE: dict(COOKIE_OBJECT), "a": 1}))
    await store.delete(SID)
    assert not await store.merge(SID, Change(set={"a": 2}), time.time() + 60)
    assert not await store.touch(SID, time.time() + 60)
    assert await rolling(store).load_touch(SID, 60, None) is None
    assert raw_express.stored(SID) is None


async def test_touch_moves_the_json_expiry_with_the_store_expiry(store: AsyncStore, raw_express: RawExpress) -> None:
    """touch and load_touch move cookie.expires in the JSON and the TTL / expires field together."""
    await store.save(SID, record({COOKIE: dict(COOKIE_OBJECT)}, ttl=30))
    assert await store.touch(SID, time.time() + 900)
    touched = await rolling(store).load_touch(SID, 1800, None)
    assert touched is not None
    found = raw_express.stored(SID)
    assert found is not None
    json_expiry = parse_iso_date(json.loads(found[0])[COOKIE]["expires"])
    assert json_expiry is not None
    assert abs(json_expiry - found[1]) < 1
    assert abs(touched.expires - found[1]) < 1
    assert found[1] > time.time() + 1700


async def test_a_browser_session_cookie_keeps_a_null_expiry(store: AsyncStore, raw_express: RawExpress) -> None:
    """A record whose cookie has no maxAge keeps expires null; only the store's expiry moves."""
    raw_express.plant(SID, '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"a":1}')
    assert await store.touch(SID, time.time() + 900)
    found = raw_express.stored(SID)
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
    store: AsyncStore, raw_express: RawExpress, expires: Any, lives: bool
) -> None:
    """No TTL (disableTTL) or no expires field: the cookie's expires decides; every verb applies the same rule.

    A dead one loads as nothing and is never written again (merge, touch and
    load_touch leave it as it is); a live one loads, and a write gives it a
    store expiry.
    """
    stamp = expires()
    text = _without_store_expiry(stamp)
    raw_express.plant(SID, text, ttl=None)
    loaded = await store.load(SID)
    if not lives:
        assert loaded is None
        assert not await store.merge(SID, Change(set={"a": 1}), time.time() + 60)
        assert not await store.touch(SID, time.time() + 60)
        assert await rolling(store).load_touch(SID, 60, None) is None
        assert raw_express.text(SID) == text
        assert raw_express.store_expiry(SID) is None
        return
    assert loaded is not None
    expected = parse_iso_date(stamp) if isinstance(stamp, str) else None
    if expected is None:
        assert loaded.expires == math.inf
    else:
        assert abs(loaded.expires - expected) < 0.001
    assert loaded.data["passport"] == {"user": "u"}
    assert await store.merge(SID, Change(set={"a": 1}), time.time() + 600)
    store_expiry = raw_express.store_expiry(SID)
    assert store_expiry is not None
    assert store_expiry > time.time() + 500


async def test_the_store_expiry_wins_over_the_cookies(store: AsyncStore, raw_express: RawExpress) -> None:
    """A TTL or an expires field wins over a past cookie.expires (connect-*'s touch moves only the store's)."""
    raw_express.plant(SID, _without_store_expiry(iso_date(time.time() - 3600)), ttl=60)
    loaded = await store.load(SID)
    assert loaded is not None
    assert abs(loaded.expires - (time.time() + 60)) < 2


@pytest.mark.parametrize("text", ['{"a":1}', "[1,2]", "not json", '{"cookie":5}'])
async def test_malformed_records_load_as_nothing_and_are_left_alone(
    store: AsyncStore, raw_express: RawExpress, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A value that is not an express-session record loads as None, is never merged into, and is logged."""
    raw_express.plant(SID, text)
    assert await store.load(SID) is None
    assert not await store.merge(SID, Change(set={"b": 2}), time.time() + 60)
    found = raw_express.stored(SID)
    assert found is not None
    assert found[0] == text
    assert "malformed" in caplog.text


async def test_save_replacing_an_old_id_deletes_it(store: AsyncStore, raw_express: RawExpress) -> None:
    """save(replaces=old) (a login's regenerate) writes the new record and deletes the old one."""
    await store.save(OTHER, record({COOKIE: dict(COOKIE_OBJECT)}))
    await store.save(SID, record({COOKIE: dict(COOKIE_OBJECT), "passport": {"user": "a"}}), replaces=OTHER)
    assert raw_express.stored(OTHER) is None
    assert await store.load(SID) is not None
