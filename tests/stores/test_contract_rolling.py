"""``load_touch`` (a rolling session loaded and refreshed in one round trip): the contract, on every store kind.

The backend details (TTLs, round trips, malformed records, SQL) stay in
``test_rolling_load.py``; the kinds and ``Expect`` are in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from _stores import HOUR, Expect, live, new_sid, same_record, user_data
from persession.exceptions import ConfigError
from persession.records import Change, Record
from persession.stores import AsyncRollingLoad, AsyncStore
from persession.stores.mongo import CAS_ATTEMPTS

pytestmark = pytest.mark.anyio

IDLE = HOUR
#: How long the records these tests save live: shorter than IDLE, so a refresh visibly moves the expiry.
TTL = 600.0


def rolling(store: AsyncStore) -> AsyncRollingLoad:
    """The store as an ``AsyncRollingLoad``: every built-in store is one."""
    assert isinstance(store, AsyncRollingLoad)
    return store


async def test_load_touch_returns_the_record_with_moved_expiry_and_accessed(store: AsyncStore, expect: Expect) -> None:
    """The record comes back with its data unchanged, accessed now and expires now + idle."""
    sid, record = new_sid(), live({"user": 42, "cart": ["a", "b"]}, ttl=TTL)
    await store.save(sid, record)
    before = time.time()
    refreshed = await rolling(store).load_touch(sid, IDLE, None)
    after = time.time()
    assert refreshed is not None
    assert user_data(refreshed, expect) == {"user": 42, "cart": ["a", "b"]}
    assert before <= refreshed.accessed <= after
    assert refreshed.expires == refreshed.accessed + IDLE  # the store's now, to the bit
    assert refreshed.expires > record.expires


@pytest.mark.expects("keeps_times")
async def test_load_touch_keeps_created(store: AsyncStore) -> None:
    """The record load_touch returns keeps its created."""
    sid, record = new_sid(), live(ttl=TTL)
    await store.save(sid, record)
    refreshed = await rolling(store).load_touch(sid, IDLE, None)
    assert refreshed is not None
    assert refreshed.created == record.created


async def test_load_touch_persists_the_new_times(store: AsyncStore, expect: Expect) -> None:
    """A later load returns the record load_touch returned: the new times were written."""
    sid = new_sid()
    await store.save(sid, live(ttl=TTL))
    refreshed = await rolling(store).load_touch(sid, IDLE, None)
    assert refreshed is not None
    assert same_record(await store.load(sid), refreshed, expect)


@pytest.mark.expects("absolute_timeout")
async def test_load_touch_caps_the_expiry_at_the_absolute_timeout(store: AsyncStore, expect: Expect) -> None:
    """With an absolute timeout closer than the idle one, the expiry becomes exactly created + absolute."""
    sid, record = new_sid(), live(age=1000.0, ttl=TTL)
    await store.save(sid, record)
    refreshed = await rolling(store).load_touch(sid, IDLE, 1500.0)
    assert refreshed is not None
    assert refreshed.expires == record.created + 1500.0  # computed by the store from the stored created
    assert refreshed.accessed > record.accessed
    assert same_record(await store.load(sid), refreshed, expect)


@pytest.mark.expects("absolute_timeout")
async def test_load_touch_ignores_a_distant_absolute_timeout(store: AsyncStore) -> None:
    """An absolute timeout further away than the idle one leaves the expiry at now + idle."""
    sid = new_sid()
    await store.save(sid, live(age=10.0, ttl=TTL))
    refreshed = await rolling(store).load_touch(sid, IDLE, 30 * 24 * HOUR)
    assert refreshed is not None
    assert refreshed.expires == refreshed.accessed + IDLE


@pytest.mark.expects("absolute_timeout")
async def test_load_touch_past_the_absolute_timeout_returns_none_for_good(store: AsyncStore) -> None:
    """A session past its absolute limit (though not yet expired) is not returned, and is dead afterwards."""
    sid = new_sid()
    await store.save(sid, live(age=2000.0, ttl=600.0))
    assert await rolling(store).load_touch(sid, IDLE, 1000.0) is None
    assert await store.load(sid) is None
    assert await store.touch(sid, time.time() + HOUR) is False
    assert await rolling(store).load_touch(sid, IDLE, None) is None


@pytest.mark.expects(absolute_timeout=False)
async def test_load_touch_refuses_an_absolute_timeout_it_cannot_count(store: AsyncStore) -> None:
    """A store that keeps no creation time raises ConfigError naming absolute_timeout, and changes nothing."""
    sid, record = new_sid(), live(ttl=TTL)
    await store.save(sid, record)
    with pytest.raises(ConfigError, match="absolute_timeout"):
        await rolling(store).load_touch(sid, IDLE, 3600.0)
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.expires < time.time() + TTL + 1


async def test_load_touch_of_a_missing_session_returns_none_and_creates_nothing(store: AsyncStore) -> None:
    """An id that was never saved gives None, and no record appears under it."""
    sid = new_sid()
    assert await rolling(store).load_touch(sid, IDLE, None) is None
    assert await store.load(sid) is None
    assert await store.touch(sid, time.time() + HOUR) is False


@pytest.mark.expects("absolute_timeout")
async def test_load_touch_of_a_missing_session_with_an_absolute_timeout_returns_none(store: AsyncStore) -> None:
    """With an absolute timeout too, an id that was never saved gives None, and no record appears under it."""
    sid = new_sid()
    assert await rolling(store).load_touch(sid, IDLE, 1000.0) is None
    assert await store.load(sid) is None
    assert await store.touch(sid, time.time() + HOUR) is False


async def test_load_touch_never_resurrects_an_expired_session(store: AsyncStore) -> None:
    """A record already past its expiry gives None and stays dead: load_touch never extends it."""
    sid = new_sid()
    now = time.time()
    await store.save(sid, Record({"n": 1}, created=now - 2 * HOUR, accessed=now - HOUR, expires=now - 10))
    assert await rolling(store).load_touch(sid, IDLE, None) is None
    assert await store.load(sid) is None
    assert await store.merge(sid, Change({"x": 1}), now + HOUR) is False


async def test_load_touch_never_resurrects_a_deleted_session(store: AsyncStore) -> None:
    """After a logout deletes the record, load_touch gives None and writes nothing back."""
    sid = new_sid()
    await store.save(sid, live(ttl=TTL))
    await store.delete(sid)
    assert await rolling(store).load_touch(sid, IDLE, None) is None
    assert await store.load(sid) is None
    assert await store.touch(sid, time.time() + HOUR) is False


async def _merges_between_load_touches(store: AsyncStore, expect: Expect, pairs: int) -> None:
    sid = new_sid()
    await store.save(sid, live({}, ttl=TTL))
    expires = time.time() + HOUR
    calls = []
    for i in range(pairs):
        calls.append(store.merge(sid, Change({f"k{i}": i}), expires))
        calls.append(rolling(store).load_touch(sid, IDLE, None))
    outcomes = await asyncio.gather(*calls)
    assert all(outcome is True for outcome in outcomes[0::2])
    assert all(isinstance(outcome, Record) for outcome in outcomes[1::2])
    final = await store.load(sid)
    assert final is not None
    assert user_data(final, expect) == {f"k{i}": i for i in range(pairs)}


@pytest.mark.expects("atomic_merges")
async def test_load_touch_writes_only_the_times(store: AsyncStore, expect: Expect) -> None:
    """Twenty merges interleaved with twenty load_touch calls all survive: load_touch never writes data back."""
    await _merges_between_load_touches(store, expect, 20)


@pytest.mark.expects(atomic_merges=False)
async def test_load_touch_writes_only_the_times_within_the_cas_attempts(store: AsyncStore, expect: Expect) -> None:
    """On a compare-and-swap store, as many concurrent writes as it attempts each (merges and load_touch) land."""
    await _merges_between_load_touches(store, expect, CAS_ATTEMPTS // 2)
