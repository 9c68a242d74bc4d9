"""The live guarded websockets of one session middleware, each closed when its session ends.

The ASGI session middleware owns a :class:`LiveSockets` and puts it in every
scope it serves (at :data:`LIVE_SOCKETS_KEY`): the guards inside register
accepted websockets there, and the middleware closes a session's websockets
when a request deletes or replaces the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Final

from ._plan import Action, Plan
from .stores.base import AsyncStore
from .types import Message, Receive, Send

#: The close code of a live websocket whose session was destroyed or revoked (an application code, 4000-4999).
REVOKED_CLOSE_CODE: Final = 4001
_REVOKED_REASON: Final = "session revoked"
#: Where the ASGI session middleware puts its :class:`LiveSockets` in a scope.
LIVE_SOCKETS_KEY: Final = "persession.live_sockets"


class _Live:
    """One guarded websocket that follows its session: closed with 4001 on revocation."""

    __slots__ = ("_closer", "_lock", "_pending", "_receive", "_revoked", "_send", "closed", "loop", "sid")

    def __init__(self, sid: str, receive: Receive, send: Send) -> None:
        self.sid = sid
        self.loop = asyncio.get_running_loop()
        self.closed = False  # a close (or denial) went to the server
        self._receive = receive
        self._send = send
        self._revoked: asyncio.Future[None] = self.loop.create_future()
        self._pending: asyncio.Future[Message] | None = None
        self._lock = asyncio.Lock()
        self._closer: asyncio.Task[None] | None = None

    def revoke(self) -> None:
        """Close the websocket with 4001; callable from any thread."""
        try:
            here = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            here = False
        if here:
            self._revoke()
        else:
            with contextlib.suppress(RuntimeError):  # that loop is closed, and the websocket with it
                self.loop.call_soon_threadsafe(self._revoke)

    def _revoke(self) -> None:
        if self._revoked.done():
            return
        self._revoked.set_result(None)
        if self._pending is not None:
            self._pending.cancel()
        self._closer = self.loop.create_task(self._close())

    async def _close(self) -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            # The client may be gone already; then there is nothing left to close.
            with contextlib.suppress(OSError, RuntimeError):
                await self._send({"type": "websocket.close", "code": REVOKED_CLOSE_CODE, "reason": _REVOKED_REASON})

    async def send(self, message: Message) -> None:
        async with self._lock:
            if self._revoked.done():
                return  # closed on revocation: the application's later messages go nowhere
            if message["type"] in ("websocket.close", "websocket.http.response.start"):
                self.closed = True
            await self._send(message)

    async def receive(self) -> Message:
        if not self._revoked.done():
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._receive())
            await asyncio.wait((self._pending, self._revoked), return_when=asyncio.FIRST_COMPLETED)
            if not self._revoked.done():
                message, self._pending = self._pending.result(), None
                return message
        return {"type": "websocket.disconnect", "code": REVOKED_CLOSE_CODE, "reason": _REVOKED_REASON}

    async def finish(self) -> None:
        """After the application returned: let the 4001 close reach the server, drop a pending receive."""
        if self._pending is not None:
            self._pending.cancel()
        if self._closer is not None:
            await self._closer


class LiveSockets:
    """The live guarded websockets under one session middleware, by session id: what a revocation closes.

    Each :class:`persession.asgi.SessionMiddleware` owns one
    (``middleware.live_sockets``, and :func:`persession.asgi.live_sockets`
    finds it from a request's scope); its guards register accepted
    websockets, and their revocation feed and re-check report to it.

    :param store: the store whose sessions the websockets follow (for the
        guards' feed and re-check), if any.

    .. versionadded:: 0.1
    .. versionchanged:: 0.3
       One per middleware instead of the process-wide ``LIVE_SOCKETS``.
    """

    def __init__(self, store: AsyncStore | None = None) -> None:
        #: The store the guards' revocation feed and re-check read.
        self.store: AsyncStore | None = store
        self._by_sid: dict[str, set[_Live]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        with self._lock:
            count = sum(len(lives) for lives in self._by_sid.values())
        return f"<LiveSockets websockets={count}>"

    def _add(self, live: _Live) -> None:
        with self._lock:
            self._by_sid.setdefault(live.sid, set()).add(live)

    def _discard(self, live: _Live) -> None:
        with self._lock:
            lives = self._by_sid.get(live.sid)
            if lives is not None:
                lives.discard(live)
                if not lives:
                    del self._by_sid[live.sid]

    def revoke(self, sid: str) -> int:
        """Close every live guarded websocket of session ``sid`` with code 4001; return how many."""
        with self._lock:
            lives = list(self._by_sid.get(sid, ()))
        for live in lives:
            live.revoke()
        return len(lives)

    def after_plan(self, plan: Plan) -> None:
        """Close the websockets of the session a completed plan deleted, or replaced by a new id."""
        if plan.action is Action.DELETE and plan.sid is not None:
            self.revoke(plan.sid)
        elif plan.action is Action.SAVE and plan.replaces is not None:
            self.revoke(plan.replaces)
