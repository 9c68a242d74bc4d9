"""The contract every store meets, run on every store kind, flavour, layout and transport (see ``conftest.py``).

Where a kind legitimately keeps a record differently (the express layouts add
a ``cookie`` member, keep no times of their own, read their expiry back to
the millisecond), a comparison goes through ``same_record``/``user_data``/
``same_expiry`` with the kind's ``Expect``; for persession's own layout those
are exact equality. An assertion that cannot hold for a kind is a test of its
own, marked ``expects(...)``, collected only for the kinds it applies to.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from _stores import HOUR, Expect, expired, live, new_sid, same_expiry, same_record, user_data
from persession.exceptions import NotSerializable
from persession.records import Change, Record
from persession.stores import AsyncStore
from persession.stores.mongo import CAS_ATTEMPTS

pytestmark = pytest.mark.anyio

# --- load and save -----------------------------------------------------------------------------


async def test_load_missing_returns_none(store: AsyncStore) -> None:
    """Loading an id that was never saved returns None."""
    assert await store.load(new_sid()) is None


async def test_save_then_load_returns_equal_record(store: AsyncStore, expect: Expect) -> None:
    """A saved record loads back with equal data, created, accessed and expires (as the kind keeps them)."""
    sid = new_sid()
    record = Record(
        {"user": 42, "cart": ["a", "b"]},
        created=1_700_000_000.25,
        accessed=time.time() - 5.5,
        expires=time.time() + HOUR,
    )
    await store.save(sid, record)
    assert same_record(await store.load(sid), record, expect)


async def test_save_overwrites_whole_record(store: AsyncStore, expect: Expect) -> None:
    """Saving an existing id replaces its data entirely rather than merging into it."""
    sid = new_sid()
    await store.save(sid, live({"a": 1, "b": 2}))
    second = live({"c": 3})
    await store.save(sid, second)
    assert same_record(await store.load(sid), second, expect)


async def test_records_are_independent(store: AsyncStore, expect: Expect) -> None:
    """Writing one id leaves another id's record untouched."""
    first, second = new_sid(), new_sid()
    one = live({"who": "first"})
    await store.save(first, one)
    await store.save(second, live({"who": "second"}))
    await store.merge(second, Change({"more": True}), time.time() + HOUR)
    await store.delete(second)
    assert same_record(await store.load(first), one, expect)


async def test_loaded_data_is_a_copy(store: AsyncStore, expect: Expect) -> None:
    """Mutating loaded data does not change what the store holds."""
    sid = new_sid()
    await store.save(sid, live({"items": [1, 2]}))
    loaded = await store.load(sid)
    assert loaded is not None
    loaded.data["items"].append(3)
    loaded.data["new"] = True
    again = await store.load(sid)
    assert again is not None
    assert user_data(again, expect) == {"items": [1, 2]}


# --- expiry ------------------------------------------------------------------------------------


async def test_expired_record_is_not_loaded(store: AsyncStore) -> None:
    """A record whose expires is already past is never returned."""
    sid = new_sid()
    await store.save(sid, expired({"user": 42}))
    assert await store.load(sid) is None


async def test_expired_record_stays_gone_after_merge_and_touch(store: AsyncStore) -> None:
    """Merge and touch on an expired record return False and do not bring it back."""
    sid = new_sid()
    await store.save(sid, expired({"user": 42}))
    future = time.time() + HOUR
    assert await store.merge(sid, Change({"k": "v"}), future) is False
    assert await store.touch(sid, future) is False
    assert await store.load(sid) is None


# --- save with replaces= -----------------------------------------------------------------------


async def test_save_replaces_deletes_the_old_id(store: AsyncStore, expect: Expect) -> None:
    """Saving with replaces= stores the new id and removes the old one."""
    old, new = new_sid(), new_sid()
    await store.save(old, live({"user": 42}))
    record = live({"user": 42, "rotated": True})
    await store.save(new, record, replaces=old)
    assert await store.load(old) is None
    assert same_record(await store.load(new), record, expect)


async def test_save_replaces_missing_id_still_saves(store: AsyncStore, expect: Expect) -> None:
    """Saving with replaces= naming an id that does not exist still saves the new record."""
    new = new_sid()
    record = live({"user": 1})
    await store.save(new, record, replaces=new_sid())
    assert same_record(await store.load(new), record, expect)


async def test_failed_save_keeps_the_replaced_record(store: AsyncStore, expect: Expect) -> None:
    """A save that fails (unserialisable data) deletes nothing, replaces= included."""
    old, new = new_sid(), new_sid()
    original = live({"user": 42})
    await store.save(old, original)
    with pytest.raises(NotSerializable) as caught:
        await store.save(new, live({"ok": 1, "bad": object()}), replaces=old)
    assert caught.value.key == "bad"
    assert same_record(await store.load(old), original, expect)
    assert await store.load(new) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"bytes", id="bytes"),
    ],
)
async def test_save_refuses_non_json_values(store: AsyncStore, value: object) -> None:
    """Every store refuses the same non-JSON values with NotSerializable naming the key."""
    sid = new_sid()
    with pytest.raises(NotSerializable) as caught:
        await store.save(sid, live({"fine": 1, "culprit": value}))
    assert caught.value.key == "culprit"
    assert await store.load(sid) is None


# --- merge -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(Change({"c": 3}), {"a": 1, "b": 2, "c": 3}, id="set adds a key"),
        pytest.param(Change({"a": "new"}), {"a": "new", "b": 2}, id="set overwrites a key"),
        pytest.param(Change({}, deleted=frozenset({"a"})), {"b": 2}, id="deleted removes a key"),
        pytest.param(Change({}, deleted=frozenset({"zzz"})), {"a": 1, "b": 2}, id="deleting a missing key is a no-op"),
        pytest.param(Change({"a": 9}, deleted=frozenset({"a"})), {"a": 9, "b": 2}, id="set wins over deleted"),
        pytest.param(Change({"c": 3}, cleared=True), {"c": 3}, id="cleared drops every other key"),
        pytest.param(Change({}, cleared=True), {}, id="cleared alone empties the data"),
        pytest.param(Change({}), {"a": 1, "b": 2}, id="empty change keeps the data"),
    ],
)
async def test_merge_applies_exactly_the_change(
    store: AsyncStore, expect: Expect, change: Change, expected: dict[str, Any]
) -> None:
    """Merge applies exactly the change's set, deleted and cleared, and keeps every other key."""
    sid = new_sid()
    await store.save(sid, live({"a": 1, "b": 2}))
    assert await store.merge(sid, change, time.time() + HOUR) is True
    loaded = await store.load(sid)
    assert loaded is not None
    assert user_data(loaded, expect) == expected


async def test_merge_moves_expiry_and_accessed(store: AsyncStore, expect: Expect) -> None:
    """Merge sets the new expires and moves accessed forward."""
    sid = new_sid()
    before = live({"a": 1}, age=600, ttl=60)
    await store.save(sid, before)
    expires = time.time() + 2 * HOUR
    assert await store.merge(sid, Change({"b": 2}), expires) is True
    after = await store.load(sid)
    assert after is not None
    assert same_expiry(after.expires, expires, expect)
    assert after.accessed > before.accessed


@pytest.mark.expects("keeps_times")
async def test_merge_keeps_created(store: AsyncStore) -> None:
    """Merge keeps the record's created."""
    sid = new_sid()
    before = live({"a": 1}, age=600, ttl=60)
    await store.save(sid, before)
    assert await store.merge(sid, Change({"b": 2}), time.time() + 2 * HOUR) is True
    after = await store.load(sid)
    assert after is not None
    assert after.created == before.created


async def test_merge_on_missing_record_writes_nothing(store: AsyncStore) -> None:
    """Merge on an id with no record returns False and creates no record."""
    sid = new_sid()
    assert await store.merge(sid, Change({"user": 42}), time.time() + HOUR) is False
    assert await store.load(sid) is None


async def test_merge_does_not_resurrect_a_destroyed_session(store: AsyncStore) -> None:
    """A merge arriving after the session was deleted returns False and leaves it deleted."""
    sid = new_sid()
    await store.save(sid, live({"user": 42}))
    await store.delete(sid)
    assert await store.merge(sid, Change({"cart": [1]}), time.time() + HOUR) is False
    assert await store.load(sid) is None


async def test_merge_refusing_a_value_changes_nothing(store: AsyncStore, expect: Expect) -> None:
    """A merge whose change cannot be encoded raises NotSerializable and leaves the record as it was."""
    sid = new_sid()
    original = live({"a": 1})
    await store.save(sid, original)
    with pytest.raises(NotSerializable):
        await store.merge(sid, Change({"bad": object()}, deleted=frozenset({"a"})), time.time() + 2 * HOUR)
    assert same_record(await store.load(sid), original, expect)


async def _concurrent_merges(store: AsyncStore, expect: Expect, count: int) -> None:
    sid = new_sid()
    await store.save(sid, live({"base": True}))
    expires = time.time() + HOUR
    results = await asyncio.gather(*(store.merge(sid, Change({f"k{i}": i}), expires) for i in range(count)))
    assert results == [True] * count
    loaded = await store.load(sid)
    assert loaded is not None
    assert user_data(loaded, expect) == {"base": True, **{f"k{i}": i for i in range(count)}}


@pytest.mark.expects("atomic_merges")
async def test_concurrent_merges_keep_every_key(store: AsyncStore, expect: Expect) -> None:
    """Fifty concurrent merges, each setting its own key on one session, leave all fifty keys."""
    await _concurrent_merges(store, expect, 50)


@pytest.mark.expects(atomic_merges=False)
async def test_concurrent_merges_within_the_cas_attempts_keep_every_key(store: AsyncStore, expect: Expect) -> None:
    """As many concurrent merges as a compare-and-swap store attempts each (CAS_ATTEMPTS) all land."""
    await _concurrent_merges(store, expect, CAS_ATTEMPTS)


async def test_merge_never_loses_a_key_set_in_between(store: AsyncStore, expect: Expect) -> None:
    """Two requests that loaded the same data and merge in turn both keep their keys."""
    sid = new_sid()
    await store.save(sid, live({"x": 1, "y": 2}))
    seen_by_both = await store.load(sid)
    assert seen_by_both is not None
    expires = time.time() + HOUR
    assert await store.merge(sid, Change({"a": "from A"}), expires) is True
    assert await store.merge(sid, Change({"b": "from B"}, deleted=frozenset({"x"})), expires) is True
    loaded = await store.load(sid)
    assert loaded is not None
    assert user_data(loaded, expect) == {"y": 2, "a": "from A", "b": "from B"}


# --- touch -------------------------------------------------------------------------------------


async def test_touch_moves_expiry_and_keeps_data(store: AsyncStore, expect: Expect) -> None:
    """Touch moves a live record's expires and accessed, keeps its data, and returns True."""
    sid = new_sid()
    before = live({"user": 42}, age=600, ttl=60)
    await store.save(sid, before)
    expires = time.time() + 3 * HOUR
    assert await store.touch(sid, expires) is True
    after = await store.load(sid)
    assert after is not None
    assert same_expiry(after.expires, expires, expect)
    assert user_data(after, expect) == user_data(before, expect)
    assert after.accessed > before.accessed


@pytest.mark.expects("keeps_times")
async def test_touch_keeps_created(store: AsyncStore) -> None:
    """Touch keeps the record's created."""
    sid = new_sid()
    before = live({"user": 42}, age=600, ttl=60)
    await store.save(sid, before)
    assert await store.touch(sid, time.time() + 3 * HOUR) is True
    after = await store.load(sid)
    assert after is not None
    assert after.created == before.created


async def test_touch_missing_returns_false(store: AsyncStore) -> None:
    """Touch on an id with no record returns False and creates nothing."""
    sid = new_sid()
    assert await store.touch(sid, time.time() + HOUR) is False
    assert await store.load(sid) is None


# --- delete ------------------------------------------------------------------------------------


async def test_delete_removes_the_record(store: AsyncStore) -> None:
    """After delete, the record no longer loads."""
    sid = new_sid()
    await store.save(sid, live({"user": 42}))
    await store.delete(sid)
    assert await store.load(sid) is None


async def test_delete_is_idempotent(store: AsyncStore) -> None:
    """Deleting a missing id, or the same id twice, succeeds and leaves nothing behind."""
    sid = new_sid()
    await store.delete(sid)
    await store.save(sid, live({"user": 42}))
    await store.delete(sid)
    await store.delete(sid)
    assert await store.load(sid) is None


# --- values ------------------------------------------------------------------------------------

JSON_VALUES = {
    "null": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int": 42,
    "negative": -7,
    "big int": 2**62,
    "float": 3.25,
    "tiny float": 1e-300,
    "empty string": "",
    "string": "hello",
    "unicode": "héllo wörld ✓ 日本語 🍪",
    "escapes": 'quote " backslash \\ newline \n tab \t nul \x00',
    "empty list": [],
    "list": [1, "two", None, 3.5, False],
    "empty object": {},
    "nested": {"a": {"b": {"c": [1, {"d": [[], {}]}]}}, "list": [[1, 2], [3, [4, [5]]]]},
}

AWKWARD_KEYS = {
    "a.b.c": 1,
    "$where": 2,
    "$": 3,
    ".leading": 4,
    "it's": 5,
    'say "hi"': 6,
    "back\\slash": 7,
    "sp ace": 8,
    "ключ": 9,
    "🔑": 10,
    "": 11,
    "123": 12,
}


@pytest.mark.parametrize(("key", "value"), [pytest.param(k, v, id=k) for k, v in JSON_VALUES.items()])
async def test_json_values_round_trip(store: AsyncStore, expect: Expect, key: str, value: Any) -> None:
    """Every JSON type, saved and then merged, loads back equal and of the same type."""
    sid = new_sid()
    await store.save(sid, live({"value": value}))
    saved = await store.load(sid)
    assert saved is not None
    assert user_data(saved, expect) == {"value": value}
    assert type(saved.data["value"]) is type(value)
    assert await store.merge(sid, Change({"merged": value}), time.time() + HOUR) is True
    merged = await store.load(sid)
    assert merged is not None
    assert user_data(merged, expect) == {"value": value, "merged": value}
    assert type(merged.data["merged"]) is type(value)


async def test_all_json_values_in_one_record(store: AsyncStore, expect: Expect) -> None:
    """A record holding every JSON type at once round-trips unchanged."""
    sid = new_sid()
    record = live(dict(JSON_VALUES))
    await store.save(sid, record)
    assert same_record(await store.load(sid), record, expect)


async def test_awkward_keys_round_trip(store: AsyncStore, expect: Expect) -> None:
    """Keys with dots, dollars, quotes, backslashes, unicode and the empty key survive save and merge."""
    sid = new_sid()
    await store.save(sid, live(dict(AWKWARD_KEYS)))
    change = Change({f"merged {k}": v for k, v in AWKWARD_KEYS.items()}, deleted=frozenset({"$where", "a.b.c"}))
    assert await store.merge(sid, change, time.time() + HOUR) is True
    loaded = await store.load(sid)
    assert loaded is not None
    expected = {k: v for k, v in AWKWARD_KEYS.items() if k not in {"$where", "a.b.c"}}
    expected.update(change.set)
    assert user_data(loaded, expect) == expected


async def test_large_value_round_trips(store: AsyncStore) -> None:
    """A 500 KB value survives save and merge intact."""
    sid = new_sid()
    big = "".join(chr(0x20 + (i * 7919) % 0x5E) for i in range(500 * 1024))
    await store.save(sid, live({"big": big}))
    assert await store.merge(sid, Change({"also": big[::-1]}), time.time() + HOUR) is True
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data["big"] == big
    assert loaded.data["also"] == big[::-1]
