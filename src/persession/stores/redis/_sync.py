"""RedisStore: the synchronous Redis store (WSGI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.cluster
from redis.exceptions import NoScriptError, ResponseError

from ...core import Action, Plan
from ...exceptions import ConfigError
from ...records import Change, Record, SessionInfo
from ..base import PendingLoad, PendingWrite, _need, run_plan
from ._async import AsyncRedisStore
from ._cache import _check_client_cache, _ClientCache
from ._connect_redis import (
    _NO_CHANGE,
    _check_layout,
    _connect_idle,
    _connect_load_result,
    _connect_save_steps,
    _connect_touched,
    _connect_write_result,
    _connect_write_step,
    _default_prefix,
    _no_index,
)
from ._constants import Layout, SyncClient
from ._errors import _map_errors
from ._express_scripts import _CONNECT_LOAD
from ._hashes import (
    _is_wrong_type,
    _load_touch_result,
    _load_touch_step,
    _malformed,
    _merge_step,
    _record,
    _save_steps,
    _touch_step,
)
from ._index import _delete_ops, _index_flow, _list_flow, _revoke_flow
from ._ops import _Batch, _check_prefix, _Flow, _Op, _Step
from ._own import SyncPool
from ._own_transport import _command, _is_noscript, _raise_errors
from ._pending import _Prefetch, _SplitRequests
from ._url import _check_client, _lean_address, _parse_url, _sentinel_client, _SentinelTarget, _Source, _split_layout

_T = TypeVar("_T")


class RedisStore(_SplitRequests):
    """A synchronous Redis session store (WSGI), on a ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    A Sentinel master client (``Sentinel(...).master_for(name)``) is a
    ``redis.Redis`` too. See the module documentation for the key layout,
    atomicity and cluster behaviour.

    :param client: the client to use; the store never closes it. Give it
        ``socket_timeout`` and ``socket_connect_timeout``, or a dead server
        blocks a worker for redis-py's defaults.
    :param prefix: prepended to the session id to make its key; default
        ``"persession:"`` (``"sess:"`` for the ``connect-redis`` layout). Use
        one prefix per application sharing a server. (connect-redis's
        ``prefix``; its default is ``"sess:"``.)
    :param clock: returns the current Unix time; default :func:`time.time`.
    :param layout: ``"persession"`` (default: the hashes described in the
        module docs) or ``"connect-redis"``: connect-redis' JSON strings, to
        share sessions with express-session (see the module docs).
    :raises ConfigError: the client is an asyncio client, the prefix is not a
        str, or the layout is unknown.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: SyncClient,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        _check_client(client, want_async=False)
        self._setup(client, None, prefix, clock, layout)

    def _setup(
        self,
        client: SyncClient | None,
        pool: SyncPool | None,
        prefix: str | None,
        clock: Callable[[], float],
        layout: Layout,
    ) -> None:
        self._client = client
        self._pool = pool
        self._layout = _check_layout(layout)
        self._connect = layout == "connect-redis"
        self._prefix = _check_prefix(_default_prefix(prefix, layout))
        self._clock = clock
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._owned: list[Callable[[], None]] = []
        self._source: _Source | None = None
        self._cache: _ClientCache | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        client_cache: int = 0,
        **client_options: Any,
    ) -> RedisStore:
        """A store on a client of its own, built from ``url``; :meth:`close` closes that client.

        Accepted URLs (a URL never falls back to localhost):

        - ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS);
        - ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``;
        - ``redis+sentinel://[[user:]password@]host[:port][,host[:port]...]/service_name[/db]``:
          asks the sentinels (port default 26379) for the master of
          ``service_name``, following failovers. The password is the master's;
          pass ``sentinel_kwargs={"password": ...}`` if the sentinels need one.

        :param client_options: for ``redis://``, ``rediss://`` and
            ``unix://`` URLs, the options of persession's own connections
            (see the module docs and :doc:`/stores`): ``db``, ``username``,
            ``password``, ``client_name``, ``socket_timeout`` (default 2.0,
            :data:`DEFAULT_SOCKET_TIMEOUT`), ``socket_connect_timeout``
            (default 2.0, :data:`DEFAULT_CONNECT_TIMEOUT`), ``retries``
            (default 1, :data:`DEFAULT_RETRIES`), ``max_connections`` (default
            100, :data:`DEFAULT_MAX_CONNECTIONS`), ``pool_timeout`` (default
            2.0, :data:`DEFAULT_POOL_TIMEOUT`) and the ``ssl_*`` options of a
            ``rediss://`` URL; they override the URL's query parameters. For
            ``redis+sentinel://``, passed to ``redis.sentinel.Sentinel`` with
            the same timeout and retry defaults.
        :param layout: as for the constructor; also accepted as the URL's
            ``layout`` query parameter (``redis://cache/0?layout=connect-redis``).
        :param client_cache: keep up to this many sessions in this process
            (Redis client-side caching, Redis 6 or later), so a request whose
            session is cached and unchanged makes no round trip to load it;
            ``0`` (the default) keeps none. Redis tells the store which
            sessions another connection changed, and each load first reads
            what it was told (one non-blocking ``recv``). Redis sends that
            in the same pass of its event loop as the change's answer, so a
            load that starts after it sees the change; only a load racing
            those microseconds can still get the previous version. Needs a
            ``redis://``, ``rediss://`` or ``unix://`` URL, Redis 6 or later
            and the ``persession`` layout. See :doc:`/stores`.
        :raises ConfigError: the URL is malformed, names no host, its
            scheme is not one of the above, an option is unknown, or
            ``client_cache`` is not a non-negative int or cannot be used.

        .. versionchanged:: 0.2 ``client_cache``.
        """
        url, layout = _split_layout(url, layout)
        target = _parse_url(url)
        _check_client_cache(client_cache)
        if not isinstance(target, _SentinelTarget):
            store = cls.__new__(cls)
            pool = SyncPool(_lean_address(target, client_options))
            store._setup(None, pool, prefix, clock, layout)
            store._owned = [pool.close]
            if client_cache:
                if store._connect:
                    raise ConfigError("client_cache", "needs the persession layout, not connect-redis")
                store._cache = _ClientCache(pool, client_cache)
                store._owned.insert(0, store._cache.close)
            store._source = _Source(url, store._prefix, clock, dict(client_options), layout)
            return store
        if client_cache:
            raise ConfigError("client_cache", "needs persession's own connections: a redis, rediss or unix URL")
        client, owned, twin_options = _sentinel_client(target, client_options)
        store = cls(client, prefix=prefix, clock=clock, layout=layout)
        store._owned = owned
        store._source = _Source(url, store._prefix, clock, twin_options, layout)
        return store

    @property
    def client(self) -> SyncClient | None:
        """The redis-py client the store was built on, or ``None`` when it has connections of its own.

        A store from :meth:`from_url` on a ``redis://``, ``rediss://`` or
        ``unix://`` URL speaks RESP over its own connections (see the module
        docs); one on a ``redis+sentinel://`` URL uses a redis-py client.
        """
        return self._client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-redis"``."""
        return self._layout

    def _run(self, step: _Step) -> Any:
        if self._cache is not None:
            self._cache.forget(step.keys)
            try:
                return self._run_uncached(step)
            finally:
                self._cache.forget(step.keys)
        return self._run_uncached(step)

    def _run_uncached(self, step: _Step) -> Any:
        if self._pool is not None:
            (reply,) = self._pool.execute((_command(step, cached=True),))
            if _is_noscript(reply):  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
                (reply,) = self._pool.execute((_command(step, cached=False),))
            return _raise_errors([reply], tolerant=False)[0]
        assert self._client is not None  # noqa: S101  (one of the two is set)
        if step.script is None:
            return self._client.delete(*step.keys)
        try:
            return self._client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH): EVAL caches it
            return self._client.eval(step.script.text, len(step.keys), *step.keys, *step.args)

    def _execute(self, op: _Op, touched: tuple[str, ...] | None = None) -> Any:
        if isinstance(op, _Step):
            return self._run(op)
        cache = self._cache
        if cache is None:
            return self._execute_batch(op)
        # Forget what the batch changes before and after it: ``touched``, or (user index
        # operations, which do not list the sessions they change) everything.
        cache.forget(touched)
        try:
            return self._execute_batch(op)
        finally:
            cache.forget(touched)

    def _execute_batch(self, op: _Batch) -> Any:
        if self._pool is not None:
            return _raise_errors(self._pool.execute(op.commands), op.tolerant)
        assert self._client is not None  # noqa: S101
        with self._client.pipeline(transaction=False) as pipe:
            for command in op.commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=not op.tolerant)

    def _drive(self, flow: _Flow[_T]) -> _T:
        with _map_errors:
            try:
                op = next(flow)
                while True:
                    op = flow.send(self._execute(op))
            except StopIteration as done:
                result: _T = done.value
                return result

    def load(self, sid: str) -> Record | None:
        """The live record for ``sid``, or ``None``: one ``HGETALL`` (connect-redis: one script, GET and PTTL)."""
        if self._connect:
            now = self._clock()
            with _map_errors:
                reply = self._run(_Step(_CONNECT_LOAD, (self._prefix + sid,)))
            return _connect_load_result(self._prefix, reply, now)
        if self._pool is not None:  # connections of our own: send, then read (and cache)
            return self.prefetch(sid).result()
        assert self._client is not None  # noqa: S101  (one of the two is set)
        with _map_errors:
            try:
                raw = self._client.hgetall(self._prefix + sid)
            except ResponseError as error:
                if not _is_wrong_type(error):
                    raise
                _malformed(self._prefix, "the key is not a hash")
                return None
        return _record(self._prefix, raw, self._clock())

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry (and its user index's TTL): one ``EVALSHA``.

        See :class:`~persession.stores.RollingLoad`. In a cluster, as with
        :meth:`touch`, the user index's TTL is left alone.
        """
        now = self._clock()
        if self._connect:
            expires = _connect_idle(now, idle, absolute)
            with _map_errors:
                reply = self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_touched(self._prefix, reply, expires, now)
        if self._pool is not None:
            return self.prefetch(sid, (idle, absolute)).result()
        step = _load_touch_step(self._prefix, sid, idle, absolute, now, self._cluster)
        with _map_errors:
            reply = self._run(step)
        return _load_touch_result(self._prefix, reply, now)

    def prefetch(self, sid: str, refresh: tuple[float, float | None] | None = None) -> PendingLoad:
        """Send the load of ``sid`` now and read the answer later: see :class:`~persession.stores.PrefetchLoad`.

        ``refresh=(idle, absolute)`` makes it :meth:`load_touch`. On a store
        with connections of its own (:meth:`from_url` on a ``redis://``,
        ``rediss://`` or ``unix://`` URL, ``persession`` layout) the command
        is written at once and the answer read by ``result()``, which holds
        one pooled connection until then; otherwise the load happens now.
        A session in the client-side cache needs no command at all.

        :raises StoreError: the command could not be sent.

        .. versionadded:: 0.2
        """
        pool = self._pool
        if pool is None or self._connect:
            if refresh is None:
                return _Prefetch.done(self, lambda: self.load(sid))
            return _Prefetch.done(self, lambda: self.load_touch(sid, *refresh))
        key = self._prefix + sid
        cache = self._cache
        with _map_errors:
            if refresh is not None:
                now = self._clock()
                step = _load_touch_step(self._prefix, sid, refresh[0], refresh[1], now, self._cluster)
                if cache is not None:
                    cache.forget(step.keys)
                sent = pool.send((_command(step, cached=True),))
                return _Prefetch(self, sent, key=key, step=step, now=now)
            token = None
            if cache is not None:
                raw, token = cache._begin(key)
                if raw is not None:
                    return _Prefetch(self, None, outcome=_record(self._prefix, raw, self._clock()))
            try:
                sent = pool.send((("HGETALL", key),))
            except BaseException:
                if cache is not None:
                    cache.forget((key,))
                raise
            return _Prefetch(self, sent, key=key, token=token)

    def send_plan(self, plan: Plan) -> PendingWrite | None:
        """Start carrying out ``plan``: see :class:`~persession.stores.SplitWrite`.

        A merge or a touch on a store with connections of its own
        (:meth:`from_url` on a ``redis://``, ``rediss://`` or ``unix://`` URL,
        ``persession`` layout) is written at once and its answer read by
        ``result()``, which holds one pooled connection until then; any other
        plan is carried out now (:func:`~persession.stores.run_plan`) and
        ``None`` returned.

        :raises StoreError: the write could not be sent, or failed (carried out now).

        .. versionadded:: 0.2
        """
        action = plan.action
        if self._pool is None or self._connect or (action is not Action.MERGE and action is not Action.TOUCH):
            run_plan(self, plan)
            return None
        if action is Action.MERGE:
            return self._send_merge(_need(plan.sid), _need(plan.change), _need(plan.expires))
        return self._send(_touch_step(self._prefix, _need(plan.sid), _need(plan.expires), self._clock(), self._cluster))

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write the whole record (and its TTL), deleting ``replaces``, in one atomic script.

        In a cluster, when the two keys are in different slots: two steps (see the module docs).
        """
        steps = (_connect_save_steps if self._connect else _save_steps)(
            self._prefix, sid, record, replaces, self._clock(), self._cluster
        )
        with _map_errors:
            for step in steps:
                self._run(step)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        """Apply ``change`` and move the expiry in one atomic script; ``False`` if the record is gone."""
        now = self._clock()
        if self._connect:
            with _map_errors:
                reply = self._run(_connect_write_step(self._prefix, sid, change, expires, now))
            return _connect_write_result(self._prefix, reply)
        if self._pool is not None:  # with client-side caching the merged record comes back too
            return self._send_merge(sid, change, expires).result()
        step = _merge_step(self._prefix, sid, change, expires, now, self._cluster)
        with _map_errors:
            return bool(self._run(step))

    def touch(self, sid: str, expires: float) -> bool:
        """Move the expiry (and ``accessed``) in one atomic script; ``False`` if the record is gone."""
        now = self._clock()
        if self._connect:  # the JSON's cookie.expires moves with the TTL
            with _map_errors:
                reply = self._run(_connect_write_step(self._prefix, sid, _NO_CHANGE, expires, now))
            return _connect_write_result(self._prefix, reply)
        step = _touch_step(self._prefix, sid, expires, now, self._cluster)
        if self._pool is not None:
            return self._send(step).result()
        with _map_errors:
            return bool(self._run(step))

    def delete(self, sid: str) -> None:
        """Delete the record, if any, and publish its id on the revocation channel: one round trip.

        A pipelined ``DEL`` and ``PUBLISH``; in a cluster, one script.
        """
        with _map_errors:
            self._execute(_delete_ops(self._prefix, sid, self._cluster), (self._prefix + sid,))

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Add the live session ``sid`` to ``user``'s index: one script (cluster: a few steps).

        ``expires`` is not needed: the index follows the session's own expiry.
        The ``connect-redis`` layout keeps no index: this does nothing.
        """
        if self._connect:
            return
        self._drive(_index_flow(self._prefix, user, sid, self._clock(), self._cluster))

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first, pruning dead entries: one script (cluster: 2 or 3 steps).

        :raises ConfigError: the ``connect-redis`` layout keeps no index.
        """
        if self._connect:
            _no_index(self._layout)
        return self._drive(_list_flow(self._prefix, user, self._clock(), self._cluster))

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` and the index, publishing each live id: one script.

        Returns the ids of the live sessions deleted. In a cluster: steps
        repeated until the index is empty (see the module docs).

        :raises ConfigError: the ``connect-redis`` layout keeps no index.
        """
        if self._connect:
            _no_index(self._layout)
        return self._drive(_revoke_flow(self._prefix, user, self._clock(), self._cluster))

    def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open."""
        owned, self._owned = self._owned, []
        with _map_errors:
            for close in owned:
                close()

    def to_async(self) -> AsyncRedisStore:
        """An :class:`AsyncRedisStore` on a new asyncio client built from the same URL and options.

        :raises ConfigError: this store was built on a client passed in; build
            ``AsyncRedisStore(redis.asyncio.Redis(...))`` yourself for ASGI.
        """
        source = self._source
        if source is None:
            raise ConfigError(
                "client",
                "to_async() needs a store built with RedisStore.from_url(); for a client you built, "
                "construct AsyncRedisStore on a redis.asyncio client to the same server",
            )
        return AsyncRedisStore.from_url(
            source.url, prefix=source.prefix, clock=source.clock, layout=source.layout, **source.options
        )
