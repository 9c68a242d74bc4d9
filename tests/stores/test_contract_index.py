"""The per-user index (``index_user``, ``user_sessions``, ``revoke_user``): the contract, on every store kind.

A kind keeps an index or says it keeps none (``Expect.indexes``). The index's
full behaviour on each backend (order, expiry, odd ids, what the backend
stores) is in ``test_user_index.py``.
"""

from __future__ import annotations

import time
import uuid

import pytest

from _stores import live, new_sid
from persession.exceptions import ConfigError
from persession.records import SessionInfo
from persession.stores import AsyncStore, AsyncUserIndex

pytestmark = pytest.mark.anyio


def indexed(store: AsyncStore) -> AsyncUserIndex:
    """The store as an ``AsyncUserIndex``: every built-in store has the verbs, whether it keeps an index or not."""
    assert isinstance(store, AsyncUserIndex)
    return store


@pytest.mark.expects("indexes")
async def test_an_indexed_session_is_listed_and_revoked(store: AsyncStore) -> None:
    """A saved, indexed session is listed with its times; revoking the user deletes it and empties the list."""
    user, sid, record = f"u-{uuid.uuid4().hex[:10]}", new_sid(), live(idle=1.5)
    await store.save(sid, record)
    await indexed(store).index_user(user, sid, record.expires)
    listed = await indexed(store).user_sessions(user)
    assert listed == [SessionInfo(sid, created=record.created, accessed=record.accessed, expires=record.expires)]
    assert await indexed(store).revoke_user(user) == [sid]
    assert await store.load(sid) is None
    assert await indexed(store).user_sessions(user) == []


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
