"""redis-py clients as transports: ``redis.Redis`` (a Sentinel master's too), ``RedisCluster``, and their asyncio twins.

What a store gets when it is given a client, or built from a
``redis+sentinel://`` URL. redis-py routes each command (cluster slots,
Sentinel failovers) and retries by the client's own policy; an error is
redis-py's, which the store translates.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ._constants import _POLL_SECONDS, AsyncClient, SyncClient
from ._hashes import _is_wrong_type
from ._ops import _Call, _Delete, _Op, _Read
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
