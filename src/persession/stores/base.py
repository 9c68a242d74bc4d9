"""The store protocols, and the one function per flavour that applies a plan.

A store is anything with these five verbs; they mirror
:class:`persession.core.Action`. Stores raise
:class:`~persession.StoreError` (or :class:`~persession.StoreUnavailable`)
for backend failures, translated from the driver's errors in one place per
module, and never return an expired record.

A store may also implement :class:`RollingLoad` (:class:`AsyncRollingLoad`):
with ``rolling=True`` the shells then load a session and refresh its expiry
in one round trip instead of two. Every built-in store does.

A sync store may implement :class:`PrefetchLoad`: the WSGI shell then sends
the load when the request arrives and reads the answer when the application
first uses the session, so the round trip overlaps the framework's own work;
and :class:`SplitWrite`: the WSGI shell sends the write when the response
starts and reads the answer just before the server sends it
(:class:`~persession.stores.redis.RedisStore` does both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar, runtime_checkable

from .._plan import Action, Plan
from ..records import Change, Record, SessionInfo

__all__ = [
    "AsyncRollingLoad",
    "AsyncStore",
    "AsyncUserIndex",
    "PendingLoad",
    "PendingWrite",
    "PrefetchLoad",
    "RevocationFeed",
    "RollingLoad",
    "SplitWrite",
    "Store",
    "SupportsAsync",
    "UserIndex",
    "arun_plan",
    "run_plan",
]

_V = TypeVar("_V")


@runtime_checkable
class Store(Protocol):
    """**Protocol**: a synchronous session store (WSGI).

    .. versionadded:: 0.1
    """

    def load(self, sid: str) -> Record | None:
        """The live record for ``sid``, or ``None`` if it is missing or expired. One round trip."""
        ...

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write a whole record, and delete ``replaces`` in the same atomic step."""
        ...

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        """Apply ``change`` to the live record atomically and move its expiry.

        Returns ``False``, writing nothing, when the record is gone (destroyed
        or expired meanwhile): a slow request cannot resurrect a logged-out
        session.
        """
        ...

    def touch(self, sid: str, expires: float) -> bool:
        """Move a live record's expiry; ``False`` when it is gone."""
        ...

    def delete(self, sid: str) -> None:
        """Delete the record, if any."""
        ...

    def close(self) -> None:
        """Release connections the store opened itself."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """**Protocol**: an asyncio session store (ASGI); the verbs of :class:`Store`, awaited.

    .. versionadded:: 0.1
    """

    async def load(self, sid: str) -> Record | None:
        """See :meth:`Store.load`."""
        ...

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """See :meth:`Store.save`."""
        ...

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        """See :meth:`Store.merge`."""
        ...

    async def touch(self, sid: str, expires: float) -> bool:
        """See :meth:`Store.touch`."""
        ...

    async def delete(self, sid: str) -> None:
        """See :meth:`Store.delete`."""
        ...

    async def close(self) -> None:
        """See :meth:`Store.close`."""
        ...


@runtime_checkable
class RollingLoad(Protocol):
    """**Protocol**: a sync store that loads a session and refreshes its expiry in one round trip.

    With ``rolling=True`` every request of an existing session refreshes its
    expiry; a store with this verb lets the shells do that while loading,
    instead of with a second round trip (a ``touch``) at the end of the
    request. Stores without it still work: they are loaded and touched.

    .. versionadded:: 0.1
    """

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record for ``sid`` and refresh its expiry, atomically, in one round trip.

        The new expiry is ``now + idle``, capped at ``created + absolute``
        unless ``absolute`` is ``None``; ``accessed`` becomes ``now``. Returns
        the record with its new times, or ``None`` when it is missing, expired
        or past its absolute limit (a dead record is never brought back) or
        malformed (as :meth:`Store.load` reports it).
        """
        ...


@runtime_checkable
class PendingLoad(Protocol):
    """**Protocol**: a load :meth:`PrefetchLoad.prefetch` sent, whose answer is read by :meth:`result`.

    .. versionadded:: 0.2
    """

    def result(self) -> Record | None:
        """The record (as :meth:`Store.load` or :meth:`RollingLoad.load_touch` returns it).

        Reads the answer on the first call, in the thread that sent the load,
        and gives the store back its connection; later calls return (or raise)
        the same again.

        :raises StoreError: the store failed.
        """
        ...


@runtime_checkable
class PrefetchLoad(Protocol):
    """**Protocol**: a sync store that can send a load now and read its answer later.

    The WSGI shell calls :meth:`prefetch` as soon as a request with a session
    cookie arrives and :meth:`PendingLoad.result` when the application first
    uses the session (or when the response starts): the store works while the
    framework routes the request, instead of the worker waiting for it. It
    always calls ``result()``, on every path, so the store gets its connection
    back.

    .. versionadded:: 0.2
    """

    def prefetch(self, sid: str, refresh: tuple[float, float | None] | None = None) -> PendingLoad:
        """Send the load of ``sid``: :meth:`Store.load`, or with ``refresh=(idle, absolute)`` ``load_touch``.

        :raises StoreError: the store failed while sending (the answer's
            errors come from :meth:`PendingLoad.result`).
        """
        ...


@runtime_checkable
class PendingWrite(Protocol):
    """**Protocol**: a write :meth:`SplitWrite.send_plan` sent, whose answer :meth:`result` reads.

    .. versionadded:: 0.2
    """

    def result(self) -> bool:
        """Read the answer, once, and give the store back its connection; later calls repeat the outcome.

        Returns what :meth:`Store.merge` or :meth:`Store.touch` returns:
        ``False`` when the record was gone (the shells ignore it).

        :raises StoreError: the write failed.
        """
        ...


@runtime_checkable
class SplitWrite(Protocol):
    """**Protocol**: a sync store that can send a plan's write now and read its answer later.

    The WSGI shell sends the write when the application starts its response
    and reads the answer before the server sends the response's first byte
    (it holds the real ``start_response`` until then, so a failed write still
    answers 503): the store works while the framework tears the request
    down, instead of the worker waiting for it. It always calls
    ``result()``, on every path.

    .. versionadded:: 0.2
    """

    def send_plan(self, plan: Plan) -> PendingWrite | None:
        """Start carrying out ``plan``: send its write and return what reads the answer.

        Returns ``None`` when the plan was carried out at once instead (an
        action the store does not split) or needs nothing.

        :raises StoreError: the write could not be sent, or (carried out at once) failed.
        """
        ...


@runtime_checkable
class AsyncRollingLoad(Protocol):
    """**Protocol**: the asyncio twin of :class:`RollingLoad`.

    .. versionadded:: 0.1
    """

    async def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """See :meth:`RollingLoad.load_touch`."""
        ...


@runtime_checkable
class UserIndex(Protocol):
    """**Protocol**: a sync store that indexes sessions by user (every built-in store does).

    :func:`persession.guard.login` records the session under the user; the
    index lists a user's live sessions and revokes them all at once (after a
    password change, say). Destroyed, revoked and expired sessions drop out.
    """

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Record that session ``sid`` belongs to ``user``.

        Does nothing when ``sid`` is missing or expired. The entry lives as
        long as the session does, however often it is touched: ``expires``
        (the session's expiry at login) is a hint, the stores go by the
        session's own expiry. Indexing a session twice is harmless.
        """
        ...

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest (by ``created``) first; dead entries are pruned."""
        ...

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` and the user's index; return the ids of the live sessions deleted."""
        ...


@runtime_checkable
class AsyncUserIndex(Protocol):
    """**Protocol**: the asyncio twin of :class:`UserIndex`."""

    async def index_user(self, user: str, sid: str, expires: float) -> None:
        """See :meth:`UserIndex.index_user`."""
        ...

    async def user_sessions(self, user: str) -> list[SessionInfo]:
        """See :meth:`UserIndex.user_sessions`."""
        ...

    async def revoke_user(self, user: str) -> list[str]:
        """See :meth:`UserIndex.revoke_user`."""
        ...


@runtime_checkable
class RevocationFeed(Protocol):
    """**Protocol**: an asyncio store that announces deleted sessions to every process.

    :class:`~persession.stores.redis.AsyncRedisStore` publishes the id of every
    session that :meth:`~AsyncStore.delete` (logout) or
    :meth:`~UserIndex.revoke_user` deletes; a websocket server uses this to
    close the connections of those sessions, in any process::

        async for sid in store.watch_revocations():
            for socket in sockets_by_session.pop(sid, ()):
                await socket.close(code=1008)

    Delivery is at most once: an id announced while the watcher is
    reconnecting is missed, so long-lived connections should also re-check
    their session now and then.
    """

    def watch_revocations(self) -> AsyncIterator[str]:
        """Yield the id of each session deleted from now on, by any process, until cancelled."""
        ...


@runtime_checkable
class SupportsAsync(Protocol):
    """**Protocol**: a sync store that can build its asyncio twin on the same data.

    The ASGI middleware accepts such a store (``store_from_url`` returns one).
    """

    def to_async(self) -> AsyncStore:
        """An :class:`AsyncStore` over the same data."""
        ...


def _need(value: _V | None) -> _V:
    if value is None:  # only a hand-built Plan can get here
        raise TypeError("malformed Plan: a field its action needs is None")
    return value


def run_plan(store: Store, plan: Plan) -> None:
    """Carry out ``plan`` on a synchronous store."""
    action = plan.action
    if action is Action.NOTHING:
        return
    sid = _need(plan.sid)
    if action is Action.SAVE:
        record = _need(plan.record)
        store.save(sid, record, replaces=plan.replaces)
        if plan.user is not None and isinstance(store, UserIndex):
            store.index_user(plan.user, sid, record.expires)
    elif action is Action.MERGE:
        store.merge(sid, _need(plan.change), _need(plan.expires))
    elif action is Action.TOUCH:
        store.touch(sid, _need(plan.expires))
    else:
        store.delete(sid)


async def arun_plan(store: AsyncStore, plan: Plan) -> None:
    """Carry out ``plan`` on an asyncio store."""
    action = plan.action
    if action is Action.NOTHING:
        return
    sid = _need(plan.sid)
    if action is Action.SAVE:
        record = _need(plan.record)
        await store.save(sid, record, replaces=plan.replaces)
        if plan.user is not None and isinstance(store, AsyncUserIndex):
            await store.index_user(plan.user, sid, record.expires)
    elif action is Action.MERGE:
        await store.merge(sid, _need(plan.change), _need(plan.expires))
    elif action is Action.TOUCH:
        await store.touch(sid, _need(plan.expires))
    else:
        await store.delete(sid)
