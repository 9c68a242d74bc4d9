"""redis-py clients as transports: ``redis.Redis`` (a Sentinel master's too), ``RedisCluster``, and their asyncio twins.

What a store gets when it is given a client, or built from a
``redis+sentinel://`` URL. redis-py routes each command (cluster slots,
Sentinel failovers) and retries by the client's own policy; an error is
redis-py's, which the store translates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._constants import _POLL_SECONDS, AsyncClient, SyncClient
from ._hashes import _is_wrong_type
from ._ops import _Arg, _Batch, _Call, _commands, _Delete, _eval, _Op, _Read
from ._own import pack
from ._own_transport import _script_loads
from ._scripts import _Script
from ._transport import _AsyncTransport, _SyncTransport


class _RedisPySync(_SyncTransport):
    """A synchronous redis-py client as a transport; ops run at once (no split)."""

    def __init__(
        self,
        client: SyncClient,
        *,
        owned: Sequence[Callable[[], None]] = (),
        twin: Callable[[], _AsyncTransport] | None = None,
    ) -> None:
        super().__init__(owned=owned, twin=twin)
        self.client = self._client = client
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        self._scripts: tuple[_Script, ...] = ()

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        self._scripts = scripts

    def _load_scripts(self) -> None:
        # Once, before the first script call: a fresh server would answer NOSCRIPT (redis-py sends
        # SCRIPT LOAD to every primary of a cluster). Failures are left to the NOSCRIPT fallback.
        scripts, self._scripts = self._scripts, ()
        with contextlib.suppress(RedisError):
            for script in scripts:
                self._client.script_load(script.text)

    def run(self, op: _Op) -> Any:
        client = self._client
        if type(op) is _Read:
            try:
                return client.hgetall(op.key)
            except ResponseError as error:
                if not _is_wrong_type(error):
                    raise
                return error
        if type(op) is _Call:
            if self._scripts:
                self._load_scripts()
            script, keys, args = op.script, op.keys, op.args
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:  # a flushed script (SCRIPT FLUSH, a failover): EVAL caches it again
                return client.eval(script.text, len(keys), *keys, *args)
        if type(op) is _Delete:
            return client.delete(*op.keys)
        with client.pipeline(transaction=False) as pipe:
            for command in op.commands:  # type: ignore[union-attr]  # the one op left: a _Batch
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=not op.tolerant)  # type: ignore[union-attr]


class _RedisPyAsync(_AsyncTransport):
    """An asyncio redis-py client as a transport."""

    def __init__(self, client: AsyncClient, *, owned: Sequence[Callable[[], Awaitable[Any]]] = ()) -> None:
        super().__init__(owned=owned)
        self.client = self._client = client
        self.cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._scripts: tuple[_Script, ...] = ()

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        self._scripts = scripts

    async def _load_scripts(self) -> None:
        scripts, self._scripts = self._scripts, ()
        with contextlib.suppress(RedisError):
            for script in scripts:
                await self._client.script_load(script.text)

    async def run(self, op: _Op) -> Any:
        client = self._client
        if type(op) is _Read:
            try:
                return await client.hgetall(op.key)
            except ResponseError as error:
                if not _is_wrong_type(error):
                    raise
                return error
        if type(op) is _Call:
            if self._scripts:
                await self._load_scripts()
            script, keys, args = op.script, op.keys, op.args
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:  # see _RedisPySync.run
                return await client.eval(script.text, len(keys), *keys, *args)
        if type(op) is _Delete:
            return await client.delete(*op.keys)
        async with client.pipeline(transaction=False) as pipe:
            for command in op.commands:  # type: ignore[union-attr]  # the one op left: a _Batch
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=not op.tolerant)  # type: ignore[union-attr]

    async def messages(self, channel: str, poll: float = _POLL_SECONDS) -> AsyncIterator[bytes | str]:
        client = self._client
        pubsub = None
        try:
            if isinstance(client, redis.asyncio.cluster.RedisCluster):
                await client.initialize()  # its pubsub needs the slot map
            pubsub = client.pubsub()
            await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
                if message is not None and message.get("type") == "message":
                    yield message["data"]
        finally:
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in redis-py


def _settled(op: _Op, replies: list[Any]) -> Any:
    """The result of ``op`` from the replies the lean transports read (error replies kept as redis-py errors)."""
    if type(op) is _Batch:
        if not op.tolerant:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies
    reply = replies[0]
    if isinstance(reply, ResponseError):
        if type(op) is _Read and _is_wrong_type(reply):
            return reply
        raise reply
    return reply


def _exchange_on(pool: Any, commands: tuple[tuple[_Arg, ...], ...]) -> list[Any]:
    """Write ``commands`` in one buffer on a connection of ``pool`` and read their replies, retried as it says."""
    packed = [pack(commands)]  # a list: send_packed_command would iterate a bytes object
    count = len(commands)
    connection = pool.get_connection()
    try:

        def exchange() -> list[Any]:
            connection.send_packed_command(packed, check_health=True)
            return _read_replies(connection, count)

        return connection.retry.call_with_retry(exchange, lambda _: connection.disconnect())  # type: ignore[no-any-return]
    finally:
        pool.release(connection)


def _read_replies(connection: Any, count: int) -> list[Any]:
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except ResponseError as error:  # a reply, not a failure: the connection is still in step
            replies.append(error)
    return replies


class _LeanRedisPySync(_RedisPySync):
    """A ``redis.Redis`` (a Sentinel master's too) spoken to through its pool's connections directly.

    The commands of an op are packed in one buffer, written with
    ``send_packed_command`` and their replies read with ``read_response``,
    under the connection's own retry policy (``retry``, ``retry_on_error``)
    and on the connections its pool gives (Sentinel: the current master).
    What this leaves out of ``execute_command`` is what a session store does
    not use: response callbacks (the decoders read raw replies), a pipeline
    object per batch, and redis-py's per-command bookkeeping.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        owned: Sequence[Callable[[], None]] = (),
        twin: Callable[[], _AsyncTransport] | None = None,
    ) -> None:
        super().__init__(client, owned=owned, twin=twin)
        self._pool: Any = client.connection_pool  # redis-py's pools are partly unannotated

    def _exchange(self, commands: tuple[tuple[_Arg, ...], ...]) -> list[Any]:
        return _exchange_on(self._pool, commands)

    def run(self, op: _Op) -> Any:
        commands = _commands(op)
        if self._scripts and type(op) is _Call:
            # The first script: the layout's SCRIPT LOADs go in the same round trip, ahead of it.
            loads = _script_loads(self._scripts)
            self._scripts = ()
            replies = self._exchange((*loads, *commands))[len(loads) :]
        else:
            replies = self._exchange(commands)
        if type(op) is _Call and isinstance(replies[0], NoScriptError):  # see _RedisPySync.run
            replies = self._exchange((_eval(op),))
        return _settled(op, replies)


class _LeanClusterSync(_RedisPySync):
    """A ``RedisCluster``: an op on keys of one slot goes straight to the primary redis-py says holds it.

    As :class:`_LeanRedisPySync`, on the connection pool of that node's own
    client. Whatever the cluster must sort out (``MOVED``, ``ASK``,
    ``TRYAGAIN``, ``CLUSTERDOWN``, a node that cannot be reached, a slot map
    not loaded yet) and ops on no key or several slots (batches) go through
    ``execute_command``, which refreshes the slot map and retries as the
    cluster client is configured; every op is idempotent, so running one
    again there is safe.
    """

    def run(self, op: _Op) -> Any:
        if type(op) is _Batch or not op.keys:
            return super().run(op)
        try:
            node = self._client.get_node_from_key(op.keys[0])  # type: ignore[union-attr]  # a RedisCluster
            pool = node.redis_connection.connection_pool
        except (RedisClusterException, AttributeError):  # no slot map yet: redis-py builds it
            return super().run(op)
        if self._scripts and type(op) is _Call:
            self._load_scripts()
        try:
            replies = _exchange_on(pool, _commands(op))
        except (RedisConnectionError, RedisTimeoutError):
            return super().run(op)
        first = replies[0]
        if isinstance(first, (AskError, TryAgainError, ClusterDownError)):  # AskError includes MovedError
            return super().run(op)
        if type(op) is _Call and isinstance(first, NoScriptError):
            replies = _exchange_on(pool, (_eval(op),))
        return _settled(op, replies)


async def _aread_replies(connection: Any, count: int) -> list[Any]:
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await connection.read_response())
        except ResponseError as error:  # see _read_replies
            replies.append(error)
    return replies


class _LeanRedisPyAsync(_RedisPyAsync):
    """The asyncio twin of :class:`_LeanRedisPySync`, for a ``redis.asyncio.Redis``.

    The connections it used stay borrowed from the client's pool, idle
    between ops, until :meth:`close` gives them back: redis-py's asyncio
    checkout (a lock, a readiness probe of the socket, bookkeeping awaited
    three times) costs more than the op itself. They are at most as many as
    ops ran at once, and belong to one event loop: used from another, the
    store gives the old loop's back and borrows anew. A connection that failed
    was disconnected by redis-py and reconnects when next used.
    """

    def __init__(self, client: redis.asyncio.Redis, *, owned: Sequence[Callable[[], Awaitable[Any]]] = ()) -> None:
        super().__init__(client, owned=owned)
        self._pool: Any = client.connection_pool  # redis-py's pools are partly unannotated
        self._idle: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _give_back(self, *, stale: bool) -> None:
        """Give the idle connections back to the pool; ``stale``: they are another loop's, so disconnected first."""
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(RedisError, OSError, RuntimeError):  # RuntimeError: its loop is gone
                if stale:
                    await connection.disconnect(nowait=True)
                await self._pool.release(connection)

    async def _exchange(self, commands: tuple[tuple[_Arg, ...], ...]) -> list[Any]:
        packed = [pack(commands)]  # see _exchange_on
        count = len(commands)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            await self._give_back(stale=self._loop is not None)
            self._loop = loop
        idle = self._idle
        connection = idle.pop() if idle else await self._pool.get_connection()
        try:

            async def exchange() -> list[Any]:
                await connection.send_packed_command(packed, check_health=True)
                return await _aread_replies(connection, count)

            return await connection.retry.call_with_retry(exchange, lambda _: connection.disconnect())  # type: ignore[no-any-return]
        finally:
            if self._loop is loop:
                idle.append(connection)
            else:  # closed, or moved to another loop, meanwhile
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await self._pool.release(connection)

    async def close(self) -> None:
        self._loop = None
        await self._give_back(stale=False)
        await super().close()

    async def run(self, op: _Op) -> Any:
        commands = _commands(op)
        if self._scripts and type(op) is _Call:  # see _LeanRedisPySync.run
            loads = _script_loads(self._scripts)
            self._scripts = ()
            replies = (await self._exchange((*loads, *commands)))[len(loads) :]
        else:
            replies = await self._exchange(commands)
        if type(op) is _Call and isinstance(replies[0], NoScriptError):
            replies = await self._exchange((_eval(op),))
        return _settled(op, replies)


class _LeanClusterAsync(_RedisPyAsync):
    """The asyncio twin of :class:`_LeanClusterSync`, for a ``redis.asyncio.cluster.RedisCluster``.

    On a connection the node gives (``acquire_connection``, no I/O), given
    back at once; anything the cluster must sort out goes through
    ``execute_command``, as there.
    """

    async def run(self, op: _Op) -> Any:
        if type(op) is _Batch or not op.keys:
            return await super().run(op)
        try:
            node = self._client.get_node_from_key(op.keys[0])  # type: ignore[union-attr]  # a RedisCluster
        except RedisClusterException:  # no slot map yet: redis-py builds it
            return await super().run(op)
        if node is None:
            return await super().run(op)
        if self._scripts and type(op) is _Call:
            await self._load_scripts()
        commands = _commands(op)
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command([pack(commands)], check_health=True)
            replies = await _aread_replies(connection, len(commands))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return await super().run(op)  # the connection disconnected itself; the cluster client retries
        finally:
            node.release(connection)
        first = replies[0]
        if isinstance(first, (AskError, TryAgainError, ClusterDownError)):  # see _LeanClusterSync.run
            return await super().run(op)
        if type(op) is _Call and isinstance(first, NoScriptError):
            return await super().run(op)  # EVALSHA, NOSCRIPT, EVAL there
        return _settled(op, replies)


def _redis_py_sync(
    client: SyncClient,
    *,
    owned: Sequence[Callable[[], None]] = (),
    twin: Callable[[], _AsyncTransport] | None = None,
) -> _RedisPySync:
    """The transport for a synchronous client: the lean one unless redis-py must route each command itself.

    A cluster (slots), a ``single_connection_client`` and a client with
    redis-py's own client-side cache keep ``execute_command``.
    """
    if isinstance(client, redis.Redis) and client.connection is None and _uncached(client):
        return _LeanRedisPySync(client, owned=owned, twin=twin)
    if isinstance(client, redis.cluster.RedisCluster):
        return _LeanClusterSync(client, owned=owned, twin=twin)
    return _RedisPySync(client, owned=owned, twin=twin)


def _redis_py_async(client: AsyncClient, *, owned: Sequence[Callable[[], Awaitable[Any]]] = ()) -> _RedisPyAsync:
    """See :func:`_redis_py_sync`."""
    if isinstance(client, redis.asyncio.Redis) and client.connection is None and _uncached(client):
        return _LeanRedisPyAsync(client, owned=owned)
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return _LeanClusterAsync(client, owned=owned)
    return _RedisPyAsync(client, owned=owned)


def _uncached(client: redis.Redis | redis.asyncio.Redis) -> bool:
    return getattr(client.connection_pool, "cache", None) is None
