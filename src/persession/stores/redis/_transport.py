"""What a Redis store runs its ops on: the transport base classes, and the wrapper that carries out at once.

A transport is chosen when the store is built (persession's own connections,
a redis-py client, either with client-side caching around it) and runs each
op (:mod:`._ops`) as one round trip. It owns what it opened: ``close`` closes
that and nothing passed in. Plain base classes, not runtime protocols: the
store checks one ``isinstance`` in ``__init__``, never per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ...exceptions import ConfigError
from ._constants import AsyncClient, SyncClient
from ._ops import _Op
from ._scripts import _Script


def _no_twin() -> ConfigError:
    return ConfigError(
        "client",
        "to_async() needs a store built with RedisStore.from_url(); for a client you built, "
        "construct AsyncRedisStore on a redis.asyncio client to the same server",
    )


class _SyncTransport:
    """Runs ops for a :class:`~persession.stores.redis.RedisStore`.

    ``splits``: :meth:`send` writes an op now and :meth:`receive` reads its
    reply later, holding a connection in between (the WSGI split); otherwise
    the store wraps the transport in :class:`_AtOnce`.
    """

    #: One script may not name keys of two slots (a cluster).
    cluster: bool = False
    splits: bool = False
    #: What the store's ``client`` property gives: the redis-py client, or ``None`` for own connections.
    client: SyncClient | None = None

    def __init__(
        self, *, owned: Sequence[Callable[[], None]] = (), twin: Callable[[], _AsyncTransport] | None = None
    ) -> None:
        self._owned = list(owned)
        self._twin = twin

    def run(self, op: _Op) -> Any:
        raise NotImplementedError  # pragma: no cover - every transport runs ops

    def send(self, op: _Op) -> Any:
        raise NotImplementedError  # pragma: no cover - only splitting transports send

    def receive(self, op: _Op, sent: Any) -> Any:
        raise NotImplementedError  # pragma: no cover - only splitting transports receive

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        """Load ``scripts`` on the server with the first op or connection, so no first use pays NOSCRIPT."""

    def twin(self) -> _AsyncTransport:
        """A transport to the same server for asyncio, built the same way.

        :raises ConfigError: this one was built on a client passed in.
        """
        if self._twin is None:
            raise _no_twin()
        return self._twin()

    def close(self) -> None:
        owned, self._owned = self._owned, []
        for close in owned:
            close()


class _AtOnce:
    """A transport's ops carried out when sent: for stores that do not split (see :class:`_SyncTransport`).

    The reply, or the error, is kept for :meth:`receive`, which the store
    calls where it translates errors.
    """

    __slots__ = ("_run",)

    def __init__(self, transport: _SyncTransport) -> None:
        self._run = transport.run

    def send(self, op: _Op) -> tuple[Any, BaseException | None]:
        try:
            return self._run(op), None
        except Exception as error:
            return None, error

    def receive(self, op: _Op, sent: tuple[Any, BaseException | None]) -> Any:
        reply, error = sent
        if error is not None:
            raise error
        return reply


class _AsyncTransport:
    """Runs ops for an :class:`~persession.stores.redis.AsyncRedisStore`; see :class:`_SyncTransport`."""

    cluster: bool = False
    client: AsyncClient | None = None

    def __init__(self, *, owned: Sequence[Callable[[], Awaitable[Any]]] = ()) -> None:
        self._owned = list(owned)

    async def run(self, op: _Op) -> Any:
        raise NotImplementedError  # pragma: no cover - every transport runs ops

    def messages(self, channel: str, poll: float) -> AsyncIterator[bytes | str]:
        """The data of every message published on ``channel``; raises when the subscription is lost.

        Wakes every ``poll`` seconds without yielding, so a cancelled consumer is noticed.
        """
        raise NotImplementedError  # pragma: no cover - every transport subscribes

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        """See :meth:`_SyncTransport.preload`."""

    async def close(self) -> None:
        owned, self._owned = self._owned, []
        for close in owned:
            await close()
