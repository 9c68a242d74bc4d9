"""RedisStore: the synchronous Redis store (WSGI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..._plan import Action, Plan
from ...records import Change, Record, SessionInfo
from .._flow import drive
from ..base import PendingLoad, PendingWrite, _need, run_plan
from ._async import AsyncRedisStore
from ._cache import _check_client_cache
from ._constants import Layout, SyncClient
from ._errors import _map_errors
from ._layouts import _make_layout
from ._ops import _Flow
from ._pending import _Pending
from ._redispy import _redis_py_sync
from ._transport import _AtOnce, _SyncTransport
from ._url import _check_client, _parse_store_url, _sync_transport

_T = TypeVar("_T")


class RedisStore:
    """A synchronous Redis session store (WSGI), on a ``redis.Redis`` or ``redis.cluster.RedisCluster``.

    A Sentinel master client (``Sentinel(...).master_for(name)``) is a
    ``redis.Redis`` too. See the module documentation for the key layout,
    atomicity and cluster behaviour.

    :param client: the client to use; the store never closes it. Give it
        ``socket_timeout`` and ``socket_connect_timeout``, or a dead server
        blocks a worker for redis-py's defaults. (:meth:`from_url` passes the
        connections it builds here instead, a private transport object.)
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
        client: SyncClient | _SyncTransport,
        *,
        prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        if isinstance(client, _SyncTransport):
            transport = client
        else:
            _check_client(client, want_async=False)
            transport = _redis_py_sync(client)
        self._layout = _make_layout(layout, prefix, clock, cluster=transport.cluster)
        self._transport = transport
        self._clock = clock
        # Decided once: split loads and writes (own connections, a layout that allows it), or at once.
        self._splits = transport.splits and self._layout.splits
        self._sender = transport if self._splits else _AtOnce(transport)
        transport.preload(self._layout.scripts)

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
        target = _parse_store_url(url, layout)
        transport = _sync_transport(target, client_options, _check_client_cache(client_cache))
        return cls(transport, prefix=prefix, clock=clock, layout=target.layout)

    @property
    def client(self) -> SyncClient | None:
        """The redis-py client the store was built on, or ``None`` when it has connections of its own.

        A store from :meth:`from_url` on a ``redis://``, ``rediss://`` or
        ``unix://`` URL speaks RESP over its own connections (see the module
        docs); one on a ``redis+sentinel://`` URL uses a redis-py client.
        """
        return self._transport.client

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._layout.prefix

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-redis"``."""
        return self._layout.name  # type: ignore[return-value]  # one of the two

    def _drive(self, flow: _Flow[_T]) -> _T:
        with _map_errors:
            return drive(self._transport.run, flow)

    def load(self, sid: str) -> Record | None:
        """The live record for ``sid``, or ``None``: one ``HGETALL`` (connect-redis: one script, GET and PTTL)."""
        op, finish = self._layout.load(sid)
        with _map_errors:
            reply = self._transport.run(op)
        return finish(reply)

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry (and its user index's TTL): one ``EVALSHA``.

        See :class:`~persession.stores.RollingLoad`. In a cluster, as with
        :meth:`touch`, the user index's TTL is left alone.
        """
        op, finish = self._layout.load_touch(sid, idle, absolute)
        with _map_errors:
            reply = self._transport.run(op)
        return finish(reply)

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
        layout = self._layout
        op, finish = layout.load(sid) if refresh is None else layout.load_touch(sid, *refresh)
        return _Pending(self._sender, op, finish)

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
        if action is Action.MERGE and self._splits:
            op, finish = self._layout.merge(_need(plan.sid), _need(plan.change), _need(plan.expires))
        elif action is Action.TOUCH and self._splits:
            op, finish = self._layout.touch(_need(plan.sid), _need(plan.expires))
        else:
            run_plan(self, plan)
            return None
        return _Pending(self._transport, op, finish)

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write the whole record (and its TTL), deleting ``replaces``, in one atomic script.

        In a cluster, when the two keys are in different slots: two steps (see the module docs).
        """
        ops = self._layout.save(sid, record, replaces)
        run = self._transport.run
        with _map_errors:
            for op in ops:
                run(op)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        """Apply ``change`` and move the expiry in one atomic script; ``False`` if the record is gone."""
        op, finish = self._layout.merge(sid, change, expires)
        with _map_errors:
            reply = self._transport.run(op)
        return finish(reply)

    def touch(self, sid: str, expires: float) -> bool:
        """Move the expiry (and ``accessed``) in one atomic script; ``False`` if the record is gone."""
        op, finish = self._layout.touch(sid, expires)
        with _map_errors:
            reply = self._transport.run(op)
        return finish(reply)

    def delete(self, sid: str) -> None:
        """Delete the record, if any, and publish its id on the revocation channel: one round trip.

        A pipelined ``DEL`` and ``PUBLISH``; in a cluster, one script.
        """
        op = self._layout.delete(sid)
        with _map_errors:
            self._transport.run(op)

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Add the live session ``sid`` to ``user``'s index: one script (cluster: a few steps).

        ``expires`` is not needed: the index follows the session's own expiry.
        The ``connect-redis`` layout keeps no index: this does nothing.
        """
        flow = self._layout.index_user(user, sid)
        if flow is not None:
            self._drive(flow)

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first, pruning dead entries: one script (cluster: 2 or 3 steps).

        :raises ConfigError: the ``connect-redis`` layout keeps no index.
        """
        return self._drive(self._layout.user_sessions(user))

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` and the index, publishing each live id: one script.

        Returns the ids of the live sessions deleted. In a cluster: steps
        repeated until the index is empty (see the module docs).

        :raises ConfigError: the ``connect-redis`` layout keeps no index.
        """
        return self._drive(self._layout.revoke_user(user))

    def close(self) -> None:
        """Close the client if :meth:`from_url` built it; a client passed in is left open."""
        with _map_errors:
            self._transport.close()

    def to_async(self) -> AsyncRedisStore:
        """An :class:`AsyncRedisStore` on a new asyncio client built from the same URL and options.

        :raises ConfigError: this store was built on a client passed in; build
            ``AsyncRedisStore(redis.asyncio.Redis(...))`` yourself for ASGI.
        """
        return AsyncRedisStore(
            self._transport.twin(), prefix=self._layout.prefix, clock=self._clock, layout=self.layout
        )
