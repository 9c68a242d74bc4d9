"""The per-user index (``index_user``, ``user_sessions``, ``revoke_user``): the contract, on every store kind.

A kind keeps an index or says it keeps none (``Expect.indexes``). What a
backend stores and how many round trips it takes (key layout, TTLs, SQL,
commandstats, revocations published to other processes) is in
``test_user_index.py``. The tests that look at the raw index read it with the
``raw_index`` fixture (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from _stores import HOUR, RawIndex, live, new_sid, unwrap
from persession.config import SessionConfig
from persession.core import Action, Plan, SessionEngine
from persession.exceptions import ConfigError
from persession.guard import login, logout
from persession.records import Change, Record, SessionInfo
from persession.stores import AsyncStore, AsyncUserIndex, RevocationFeed, Store, UserIndex, arun_plan, run_plan

pytestmark = pytest.mark.anyio

#: Seconds since a test record's last access: unlike its age, so a store that lists created as accessed fails.
ACTIVE = 1.5


def indexed(store: AsyncStore) -> AsyncUserIndex:
    """The store as an ``AsyncUserIndex``: every built-in store has the verbs, whether it keeps an index or not."""
    assert isinstance(store, AsyncUserIndex)
    return store


def new_user(label: str = "u") -> str:
    """A user id no other test uses (stores on shared servers keep data between tests)."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def info(sid: str, record: Record) -> SessionInfo:
    """What the index should report for ``record`` saved under ``sid``."""
    return SessionInfo(sid, created=record.created, accessed=record.accessed, expires=record.expires)


async def saved(store: AsyncStore, user: str | None, record: Record | None = None) -> tuple[str, Record]:
    """Save a new session (indexed under ``user`` unless None); return its id and record."""
    sid, record = new_sid(), record if record is not None else live(idle=ACTIVE)
    await store.save(sid, record)
    if user is not None:
        await indexed(store).index_user(user, sid, record.expires)
    return sid, record


# --- the protocols ----------------------------------------------------------------------------------


async def test_every_store_class_implements_the_index(store: AsyncStore, kind: str) -> None:
    """Every built-in store is a UserIndex (sync) or an AsyncUserIndex (async), as run_plan checks.

    Only the async Redis stores are a RevocationFeed.
    """
    native = unwrap(store)
    if native is not store:  # a sync store in its adapter (a runtime protocol cannot tell sync from async)
        assert isinstance(native, UserIndex)
    else:
        assert isinstance(native, AsyncUserIndex)
    assert isinstance(native, RevocationFeed) is ("redis" in kind.split("-") and kind.endswith("-async"))


@pytest.mark.expects(indexes=False)
async def test_a_kind_without_an_index_refuses_to_list_or_revoke(store: AsyncStore) -> None:
    """index_user does nothing; listing or revoking a user's sessions raises ConfigError naming the layout."""
    sid, record = new_sid(), live()
    await store.save(sid, record)
    await indexed(store).index_user("42", sid, time.time() + 60)
    with pytest.raises(ConfigError, match="layout"):
        await indexed(store).user_sessions("42")
    with pytest.raises(ConfigError, match="layout"):
        await indexed(store).revoke_user("42")
    assert await store.load(sid) is not None


# --- indexing and listing ---------------------------------------------------------------------------

# Every test below runs on the kinds that keep an index.
indexes = pytest.mark.expects("indexes")


@indexes
async def test_an_indexed_session_is_listed_and_revoked(store: AsyncStore) -> None:
    """A saved, indexed session is listed with its times; revoking the user deletes it and empties the list."""
    user, sid, record = new_user(), new_sid(), live(idle=ACTIVE)
    await store.save(sid, record)
    await indexed(store).index_user(user, sid, record.expires)
    assert await indexed(store).user_sessions(user) == [info(sid, record)]
    assert await indexed(store).revoke_user(user) == [sid]
    assert await store.load(sid) is None
    assert await indexed(store).user_sessions(user) == []


@indexes
async def test_index_after_save_lists_the_session(store: AsyncStore, raw_index: RawIndex) -> None:
    """A saved and indexed session is listed with exactly its created, accessed and expires."""
    user = new_user()
    sid, record = await saved(store, user)
    assert await indexed(store).user_sessions(user) == [info(sid, record)]
    assert raw_index.entries(user) == {sid}


@indexes
async def test_user_sessions_are_oldest_first(store: AsyncStore) -> None:
    """Sessions are listed by created, oldest first, whatever order they were indexed in."""
    user = new_user()
    now = time.time()
    made = [await saved(store, user, live(created=now - age, idle=ACTIVE)) for age in (50.0, 500.0, 5.0, 5000.0)]
    listed = await indexed(store).user_sessions(user)
    assert [entry.sid for entry in listed] == [sid for sid, _ in sorted(made, key=lambda pair: pair[1].created)]
    assert listed == sorted((info(sid, record) for sid, record in made), key=lambda entry: entry.created)


@indexes
async def test_unknown_user_has_no_sessions(store: AsyncStore) -> None:
    """A user never indexed lists nothing and revokes nothing."""
    user = new_user()
    assert await indexed(store).user_sessions(user) == []
    assert await indexed(store).revoke_user(user) == []


@indexes
async def test_indexing_twice_is_idempotent(store: AsyncStore, raw_index: RawIndex) -> None:
    """Indexing the same session under the same user twice leaves one entry."""
    user = new_user()
    sid, record = await saved(store, user)
    await indexed(store).index_user(user, sid, record.expires)
    assert await indexed(store).user_sessions(user) == [info(sid, record)]
    assert raw_index.entries(user) == {sid}


@indexes
async def test_indexing_a_missing_session_records_nothing(store: AsyncStore, raw_index: RawIndex) -> None:
    """index_user on an id that was never saved (or already expired) adds no entry."""
    user = new_user()
    await indexed(store).index_user(user, new_sid(), time.time() + HOUR)
    sid, _ = await saved(store, None)
    await store.touch(sid, time.time() - 1)  # now expired
    await indexed(store).index_user(user, sid, time.time() + HOUR)
    assert await indexed(store).user_sessions(user) == []
    assert raw_index.entries(user) == set()


@indexes
async def test_users_are_kept_apart(store: AsyncStore) -> None:
    """Each user lists only their own sessions."""
    alice, bob = new_user("alice"), new_user("bob")
    a1, a1_record = await saved(store, alice)
    b1, b1_record = await saved(store, bob)
    await saved(store, None)  # an anonymous session is in nobody's index
    assert await indexed(store).user_sessions(alice) == [info(a1, a1_record)]
    assert await indexed(store).user_sessions(bob) == [info(b1, b1_record)]


@indexes
@pytest.mark.parametrize(
    "label",
    [
        pytest.param(":", id="colon"),
        pytest.param("user:42", id="looks-like-an-index-key"),
        pytest.param("ünïcødé 名前 🎉", id="unicode"),
        pytest.param("", id="empty"),
        pytest.param("{tag}", id="hash-tag"),
        pytest.param("*?[x] %.$", id="glob-and-escapes"),
        pytest.param("x" * 300, id="long"),
    ],
)
async def test_odd_user_ids_work(store: AsyncStore, label: str) -> None:
    """User ids with colons, unicode, braces, globs, or nothing at all index, list and revoke like any other."""
    user = label  # every store of the suite is a fresh namespace: no other test sees these ids
    other = user + ":"  # a user id that extends this one must not share its index
    sid, record = await saved(store, user)
    other_sid, _ = await saved(store, other)
    assert await indexed(store).user_sessions(user) == [info(sid, record)]
    assert await indexed(store).revoke_user(user) == [sid]
    assert await store.load(sid) is None
    assert [entry.sid for entry in await indexed(store).user_sessions(other)] == [other_sid]
    await indexed(store).revoke_user(other)


@indexes
async def test_a_user_named_like_a_session_id_cannot_touch_that_session(store: AsyncStore) -> None:
    """Revoking a user whose id equals some session's id leaves that session alone (keys cannot collide)."""
    sid, record = await saved(store, None)
    owner = new_user()
    await indexed(store).index_user(owner, sid, record.expires)
    assert await indexed(store).revoke_user(sid) == []
    assert await indexed(store).user_sessions(sid) == []
    assert await store.load(sid) == record
    assert await indexed(store).user_sessions(owner) == [info(sid, record)]


# --- dead entries -----------------------------------------------------------------------------------


@indexes
async def test_deleted_sessions_drop_out_and_are_pruned(store: AsyncStore, raw_index: RawIndex) -> None:
    """A deleted session is no longer listed, and listing removes its entry from the backend."""
    user = new_user()
    gone, _ = await saved(store, user)
    kept, kept_record = await saved(store, user)
    await store.delete(gone)
    assert await indexed(store).user_sessions(user) == [info(kept, kept_record)]
    assert raw_index.entries(user) == {kept}


@indexes
async def test_expired_sessions_drop_out(store: AsyncStore, raw_index: RawIndex) -> None:
    """A session that expires on its own (in real time) is no longer listed or revoked."""
    user = new_user()
    await saved(store, user, live(ttl=0.4, idle=ACTIVE))
    kept, kept_record = await saved(store, user)
    await asyncio.sleep(0.6)
    assert await indexed(store).user_sessions(user) == [info(kept, kept_record)]
    if not raw_index.in_records:  # else the entry goes with its record, when the backend removes it
        assert raw_index.entries(user) == {kept}
    assert await indexed(store).revoke_user(user) == [kept]


@indexes
async def test_sessions_expired_by_touch_drop_out(store: AsyncStore) -> None:
    """A session whose expiry a touch moved into the past is no longer listed."""
    user = new_user()
    ended, _ = await saved(store, user)
    kept, kept_record = await saved(store, user)
    assert await store.touch(ended, time.time() - 1) is True
    assert await indexed(store).user_sessions(user) == [info(kept, kept_record)]


@indexes
async def test_indexing_prunes_dead_entries(store: AsyncStore, raw_index: RawIndex) -> None:
    """A login drops the user's dead entries, so a user who never lists sessions has a bounded index."""
    user = new_user()
    dead = [(await saved(store, user))[0] for _ in range(3)]
    for sid in dead:
        await store.delete(sid)
    sid, _ = await saved(store, user)
    assert raw_index.entries(user) == {sid}


@indexes
async def test_active_sessions_outlive_their_first_expiry_in_the_index(store: AsyncStore) -> None:
    """A session kept alive by touch or merge past its login-time expiry stays listed and revocable."""
    user = new_user()
    # 1.5 s: room for two indexed saves and a touch on a slow Cluster under coverage (0.5 s was not).
    touched, first = await saved(store, user, live(ttl=1.5, idle=ACTIVE))
    merged, second = await saved(store, user, live(ttl=1.5, idle=ACTIVE))
    later = time.time() + HOUR
    assert await store.touch(touched, later) is True
    assert await store.merge(merged, Change({"fresh": True}, cleared=True), later) is True
    # Past the expiry both sessions had when they were indexed.
    await asyncio.sleep(max(first.expires, second.expires) + 0.3 - time.time())
    listed = await indexed(store).user_sessions(user)
    assert {entry.sid for entry in listed} == {touched, merged}
    assert all(entry.expires == later for entry in listed)
    assert await indexed(store).revoke_user(user) == sorted([touched, merged])
    assert await store.load(touched) is None
    assert await store.load(merged) is None


@indexes
async def test_saving_over_an_indexed_session_keeps_it_indexed(store: AsyncStore) -> None:
    """Rewriting a session's whole record under the same id leaves it in its user's index."""
    user = new_user()
    sid, _ = await saved(store, user)
    again = live(age=5.0, idle=ACTIVE)
    await store.save(sid, again)
    assert await indexed(store).user_sessions(user) == [info(sid, again)]
    assert await indexed(store).revoke_user(user) == [sid]


# --- revocation -------------------------------------------------------------------------------------


@indexes
async def test_revoke_user_deletes_all_and_only_that_users_sessions(store: AsyncStore, raw_index: RawIndex) -> None:
    """revoke_user deletes every session of the user, returns their ids, and empties the index."""
    alice, bob = new_user("alice"), new_user("bob")
    mine = [(await saved(store, alice))[0] for _ in range(3)]
    theirs, theirs_record = await saved(store, bob)
    anonymous, anonymous_record = await saved(store, None)
    assert await indexed(store).revoke_user(alice) == sorted(mine)
    for sid in mine:
        assert await store.load(sid) is None
    assert await indexed(store).user_sessions(alice) == []
    assert raw_index.entries(alice) == set()
    assert await store.load(theirs) == theirs_record
    assert await store.load(anonymous) == anonymous_record
    assert await indexed(store).user_sessions(bob) == [info(theirs, theirs_record)]
    assert await indexed(store).revoke_user(alice) == []


@indexes
async def test_revoke_user_ends_the_sessions_this_store_just_read(store: AsyncStore) -> None:
    """A session loaded (or merged into) just before its user is revoked does not load afterwards.

    A store that keeps what it read (``client_cache``) must drop what its own
    revoke deleted: Redis tells a tracking connection nothing of its own
    writes (``NOLOOP``).
    """
    user = new_user()
    (read, _), (merged, _) = await saved(store, user), await saved(store, user)
    assert await store.load(read) is not None
    assert await store.load(merged) is not None
    assert await store.merge(merged, Change({"x": 1}), time.time() + HOUR) is True
    assert await indexed(store).revoke_user(user) == sorted([read, merged])
    assert await store.load(read) is None
    assert await store.load(merged) is None


@indexes
async def test_revoke_returns_only_live_ids(store: AsyncStore) -> None:
    """Ids of sessions already deleted or expired are not reported as revoked."""
    user = new_user()
    kept, _ = await saved(store, user)
    deleted, _ = await saved(store, user)
    ended, _ = await saved(store, user)
    await store.delete(deleted)
    await store.touch(ended, time.time() - 1)
    assert await indexed(store).revoke_user(user) == [kept]
    assert await store.load(kept) is None


@indexes
async def test_a_session_indexed_after_a_revoke_is_listed_again(store: AsyncStore) -> None:
    """A revoke removes the index, and the user's next login starts a new one."""
    user = new_user()
    await saved(store, user)
    await indexed(store).revoke_user(user)
    sid, record = await saved(store, user)
    assert await indexed(store).user_sessions(user) == [info(sid, record)]


# --- end to end: the engine, run_plan and guard.login -----------------------------------------------


async def run(store: AsyncStore, plan: Plan) -> None:
    """Carry out ``plan`` with run_plan on a sync store, or arun_plan on an async one."""
    native = unwrap(store)
    if native is not store:  # a sync store in its adapter
        assert isinstance(native, Store)
        run_plan(native, plan)
    else:
        await arun_plan(store, plan)


@indexes
async def test_login_through_the_engine_indexes_the_session(store: AsyncStore) -> None:
    """A login request's plan saves the session and indexes it under str(user); logout drops it."""
    engine = SessionEngine(SessionConfig(secret="s" * 32))
    user = uuid.uuid4().int % 10**9

    async def log_in() -> Plan:
        opening = engine.open(None)
        session = engine.build(opening, None)
        login(session, user, role="admin")
        plan = engine.plan(session, opening, status=200, secure_request=True)
        assert plan.action is Action.SAVE
        assert plan.user == str(user)
        await run(store, plan)
        return plan

    first = await log_in()
    second = await log_in()
    assert first.sid is not None
    assert second.sid is not None
    assert first.record is not None
    assert second.record is not None
    listed = await indexed(store).user_sessions(str(user))
    assert {entry.sid for entry in listed} == {first.sid, second.sid}
    assert info(first.sid, first.record) in listed
    assert info(second.sid, second.record) in listed
    stored = await store.load(first.sid)
    assert stored is not None
    assert stored.data == {"user": user, "role": "admin"}

    # The next request on the first session logs out: a DELETE that drops it from the index.
    cookie = f"session={first.set_cookie.split(';')[0].split('=', 1)[1]}" if first.set_cookie else None
    opening = engine.open(cookie)
    assert opening.sid == first.sid
    session = engine.build(opening, await store.load(first.sid))
    logout(session)
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.DELETE
    await run(store, plan)
    assert [entry.sid for entry in await indexed(store).user_sessions(str(user))] == [second.sid]
    assert await indexed(store).revoke_user(str(user)) == [second.sid]


@indexes
async def test_a_save_without_login_indexes_nothing(store: AsyncStore) -> None:
    """An ordinary new session (no login) is saved but not indexed under anyone."""
    engine = SessionEngine(SessionConfig(secret="s" * 32))
    opening = engine.open(None)
    session = engine.build(opening, None)
    session["user"] = "not via login"
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.user is None
    await run(store, plan)
    assert plan.sid is not None
    assert await store.load(plan.sid) is not None
    assert await indexed(store).user_sessions("not via login") == []
