"""The WSGI split on persession's own pool: a load or write sent now, its answer read later."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ...exceptions import StoreError
from ...records import Change, Record
from ._cache import _ClientCache
from ._errors import _map_errors
from ._hashes import _is_wrong_type, _load_touch_result, _malformed, _merge_step, _record
from ._ops import _Arg, _Step
from ._own import ReplyError, Sent, SyncPool
from ._own_transport import _command, _is_noscript, _raise_errors

_T = TypeVar("_T")


class _Awaited(Generic[_T]):
    """A command a :class:`RedisStore` sent on its pool, whose answer :meth:`result` reads.

    Holds the pool's connection until the first :meth:`result`; the outcome
    (a value or the :class:`~persession.StoreError`) is kept for later calls.
    """

    __slots__ = ("outcome", "sent", "store")

    def __init__(self, store: _SplitRequests, sent: Sent | None, outcome: _T | StoreError) -> None:
        self.store = store
        self.sent = sent
        self.outcome = outcome

    def result(self) -> _T:
        """The store's answer (see :class:`~persession.stores.PendingLoad` and ``PendingWrite``)."""
        sent = self.sent
        if sent is not None:
            self.sent = None
            try:
                self.outcome = self._read(sent)
            except StoreError as error:
                self.outcome = error
        outcome = self.outcome
        if isinstance(outcome, StoreError):
            raise outcome
        return outcome

    def _read(self, sent: Sent) -> _T:
        raise NotImplementedError  # pragma: no cover - every subclass reads its answer


class _Prefetch(_Awaited["Record | None"]):
    """A load :meth:`RedisStore.prefetch` sent (or did at once): see :class:`~persession.stores.PendingLoad`."""

    __slots__ = ("key", "now", "step", "token")

    def __init__(
        self,
        store: _SplitRequests,
        sent: Sent | None,
        *,
        key: str = "",
        step: _Step | None = None,
        now: float = 0.0,
        token: object | None = None,
        outcome: Record | StoreError | None = None,
    ) -> None:
        super().__init__(store, sent, outcome)
        #: The hash ``HGETALL`` reads (``step`` is ``None``), or ``load_touch``'s script.
        self.key = key
        self.step = step
        self.now = now
        #: The client-side cache's token for the read, if it may keep the reply.
        self.token = token

    @classmethod
    def done(cls, store: _SplitRequests, load: Callable[[], Record | None]) -> _Prefetch:
        """A load done at once (stores without connections of their own, the connect-redis layout)."""
        try:
            return cls(store, None, outcome=load())
        except StoreError as error:
            return cls(store, None, outcome=error)

    def _read(self, sent: Sent) -> Record | None:
        return self.store._receive(self, sent)


class _PendingStep(_Awaited[bool]):
    """A merge or touch sent (:meth:`RedisStore.send_plan`): see :class:`~persession.stores.PendingWrite`."""

    __slots__ = ("commands", "key", "step", "token")

    def __init__(
        self,
        store: _SplitRequests,
        sent: Sent,
        step: _Step,
        commands: tuple[tuple[_Arg, ...], ...],
        key: str | None = None,
        token: object | None = None,
    ) -> None:
        super().__init__(store, sent, False)
        self.step = step
        #: What was sent: the script, and with client-side caching after a merge the HGETALL that refreshes it.
        self.commands = commands
        #: With client-side caching, after a merge: the key the HGETALL refreshes and the cache's token.
        self.key = key
        self.token = token

    def _read(self, sent: Sent) -> bool:
        return self.store._confirm(self, sent)


class _SplitRequests:
    """The halves of :class:`RedisStore`'s split requests (``prefetch``, ``send_plan``) on its own pool.

    Sending a merge or touch, and the second halves that read the answers
    (:class:`_Prefetch` and :class:`_PendingStep` call them). A base class of
    the store rather than methods of its own only to keep ``_sync`` under 500
    lines: the code is the store's, unchanged.
    """

    _pool: SyncPool | None
    _cache: _ClientCache | None
    _prefix: str
    _clock: Callable[[], float]
    _cluster: bool

    def _receive(self, prefetch: _Prefetch, sent: Sent) -> Record | None:
        """:meth:`prefetch`'s second half: read the answer it sent for (and keep it in the cache)."""
        assert self._pool is not None  # noqa: S101  (prefetch sends only on a pool)
        cache = self._cache
        step = prefetch.step
        try:
            with _map_errors:
                (reply,) = self._pool.receive(sent)
                if step is not None:
                    if _is_noscript(reply):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                        (reply,) = self._pool.execute((_command(step, cached=False),))
                    (reply,) = _raise_errors([reply], tolerant=False)
                    return _load_touch_result(self._prefix, reply, prefetch.now)
                if isinstance(reply, ReplyError):
                    (reply,) = _raise_errors([reply], tolerant=True)
                    if not _is_wrong_type(reply):
                        raise reply
                    _malformed(self._prefix, "the key is not a hash")
                    return None
        except BaseException:
            if cache is not None:
                cache.forget((prefetch.key,))
            raise
        finally:
            if cache is not None and step is not None:
                cache.forget(step.keys)
        if cache is not None:
            cache._keep(prefetch.key, prefetch.token, reply)
        return _record(self._prefix, reply, self._clock())

    def _send_merge(self, sid: str, change: Change, expires: float) -> _PendingStep:
        step = _merge_step(self._prefix, sid, change, expires, self._clock(), self._cluster)
        return self._send(step, refresh=self._prefix + sid)

    def _send(self, step: _Step, refresh: str | None = None) -> _PendingStep:
        """Send a merge or touch ``step`` on the pool; with client-side caching, an ``HGETALL`` of ``refresh`` too."""
        assert self._pool is not None  # noqa: S101  (only stores with a pool send)
        cache = self._cache
        commands: tuple[tuple[_Arg, ...], ...] = (_command(step, cached=True),)
        token: object | None = None
        with _map_errors:
            if cache is None:
                return _PendingStep(self, self._pool.send(commands), step, commands)
            cache.forget(step.keys)
            if refresh is not None:  # the merged record comes back in the same round trip
                _, token = cache._begin(refresh)
                commands += (("HGETALL", refresh),)
            try:
                sent = self._pool.send(commands)
            except BaseException:
                cache.forget(step.keys)
                raise
        return _PendingStep(self, sent, step, commands, refresh, token)

    def _confirm(self, pending: _PendingStep, sent: Sent) -> bool:
        """:meth:`_send`'s second half: read the answer (and keep a merged record in the cache)."""
        assert self._pool is not None  # noqa: S101  (only stores with a pool send)
        cache = self._cache
        try:
            with _map_errors:
                replies = self._pool.receive(sent)
                if _is_noscript(replies[0]):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                    replies = self._pool.execute((_command(pending.step, cached=False), *pending.commands[1:]))
                replies = _raise_errors(replies, tolerant=False)
        except BaseException:
            if cache is not None:
                cache.forget(pending.step.keys)
            raise
        if cache is None:
            return bool(replies[0])
        if pending.key is not None:
            return bool(cache._settle(pending.key, pending.token, replies[0], replies[1]))
        cache.forget(pending.step.keys)
        return bool(replies[0])
