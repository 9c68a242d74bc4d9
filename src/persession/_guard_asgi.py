"""The ASGI websocket guard (re-exported by :mod:`persession.guard`).

It refuses handshakes the :class:`~persession.guard.GuardPolicy` refuses and
makes the accepted ones follow their session: each is registered with the
:class:`~persession.guard.LiveSockets` of the session middleware around it,
found in the scope, and closed with code 4001 when the session ends. It
imports no shell: the middleware builds it, or the application puts it
inside one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Final

from asgiref.compatibility import guarantee_single_callable

from ._live import LIVE_SOCKETS_KEY, LiveSockets, _Live
from ._policy import GuardPolicy, Refusal
from .exceptions import ConfigError, StoreError
from .session import Session
from .stores.base import AsyncStore, RevocationFeed
from .types import Message, Receive, Send

#: Seconds between two subscriptions to a revocation feed that failed or ended.
_FEED_RETRY: Final = 5.0
log: logging.Logger = logging.getLogger("persession")
DENIAL_HEADERS: Final = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]


def first_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), decoded, or ``None``."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class WebSocketGuard:
    """Refuse websocket handshakes of logged-out users and foreign origins (ASGI).

    Put it inside :class:`persession.asgi.SessionMiddleware` (which loads the
    session read-only for websocket scopes):
    ``SessionMiddleware(app, websocket_guard=GuardPolicy(...))`` does it for
    you, or wrap the app yourself, ``SessionMiddleware(WebSocketGuard(app), ...)``.

    Accepted websockets follow their session (see :mod:`persession.guard`):
    they are closed with code 4001 when it is destroyed or revoked. The
    middleware's store serves the revocation feed and the re-check.

    :param app: the ASGI application.
    :param policy: what to check; default :class:`GuardPolicy` (logged in, same origin).

    .. versionadded:: 0.1
    .. versionchanged:: 0.3
       No standalone mode (``secret=``, ``store=`` and session options):
       the guard sits inside the session middleware, whose store it uses.
    """

    def __init__(self, app: Any, *, policy: GuardPolicy | None = None, **options: Any) -> None:
        if options:
            raise ConfigError(
                sorted(options)[0],
                "a guard takes no session options: use SessionMiddleware(app, secret=..., store=...,"
                " websocket_guard=policy), or put the guard inside that middleware",
            )
        self.app: Any = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.policy: GuardPolicy = policy if policy is not None else GuardPolicy()
        #: The registry (of the middleware around the guard) that accepted websockets join.
        self.live_sockets: LiveSockets | None = None
        self._live: set[_Live] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._guard(scope, receive, send)

    async def _guard(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] != "websocket" or not self.policy.guards(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        session, refusal = self._check(scope)
        registry = scope.get(LIVE_SOCKETS_KEY)
        if refusal is not None:
            await _deny_websocket(scope, receive, send, refusal)
        elif session is None or session.id is None or not isinstance(registry, LiveSockets):
            await self.app(scope, receive, send)  # an unstored session (or no middleware): nothing to follow
        else:
            await self._follow(registry, session.id, scope, receive, send)

    def _check(self, scope: Any) -> tuple[Session | None, Refusal | None]:
        """The scope's session, and why the policy refuses it (``None``: it may proceed)."""
        headers = scope.get("headers", ())
        session = scope.get("session")
        session = session if isinstance(session, Session) else None
        origin, host, forwarded = (first_header(headers, name) for name in (b"origin", b"host", b"x-forwarded-host"))
        return session, self.policy.check(session, origin, host, forwarded)

    async def _follow(self, registry: LiveSockets, sid: str, scope: Any, receive: Receive, send: Send) -> None:
        live = _Live(sid, receive, send)
        self.live_sockets = registry
        self._live.add(live)
        registry._add(live)
        if not self._tasks:
            self._start(registry)
        try:
            await self.app(scope, live.receive, live.send)
        finally:
            registry._discard(live)
            self._live.discard(live)
            if not self._live:
                await self.stop()
            await live.finish()

    def _start(self, registry: LiveSockets) -> None:
        store, interval = registry.store, self.policy.recheck_interval
        if store is None:
            return
        if isinstance(store, RevocationFeed):
            self._tasks.append(asyncio.create_task(_watch(store, registry)))
        if interval is not None:
            self._tasks.append(asyncio.create_task(self._recheck(store, registry, interval)))

    async def stop(self) -> None:
        """Stop the background tasks (revocation feed, re-check); the next websocket restarts them."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _recheck(self, store: AsyncStore, registry: LiveSockets, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for sid in {live.sid for live in self._live}:
                try:
                    gone = await store.load(sid) is None
                except StoreError:
                    continue  # an outage is not a revocation
                if gone:
                    registry.revoke(sid)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await self.stop()
            return message

        return lifespan_receive


async def _watch(feed: RevocationFeed, registry: LiveSockets) -> None:
    """Close the websockets of every session the feed reports revoked, resubscribing after failures."""
    while True:
        try:
            async for sid in feed.watch_revocations():
                registry.revoke(sid)
        except StoreError as error:
            log.warning("session revocation feed failed, resubscribing in %ss: %s", _FEED_RETRY, error)
        await asyncio.sleep(_FEED_RETRY)


async def _deny_websocket(scope: Any, receive: Any, send: Any, refusal: Refusal) -> None:
    message = await receive()  # the handshake's websocket.connect
    if message.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": DENIAL_HEADERS})
        await send({"type": "websocket.http.response.body", "body": f"{refusal.reason}\n".encode()})
    else:
        # Closing before accept: servers answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.reason})
