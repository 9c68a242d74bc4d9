"""The live guarded websockets of a process, each closed when its session is destroyed or revoked.

Used by the guards (:mod:`persession.guard`) and by the session middleware,
which closes a session's websockets when it destroys the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Final

from ._plan import Action, Plan
from .types import Message, Receive, Send

#: The close code of a live websocket whose session was destroyed or revoked (an application code, 4000-4999).
REVOKED_CLOSE_CODE: Final = 4001
_REVOKED_REASON: Final = "session revoked"


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
    """The live guarded websockets of this process, by session id: what a revocation closes.

    :data:`LIVE_SOCKETS` is the one instance; the ASGI middleware and the
    guards' feeds and re-checks report to it.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._by_sid: dict[str, set[_Live]] = {}
        self._lock = threading.Lock()

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


#: The process-wide registry of live guarded websockets.
LIVE_SOCKETS: Final = LiveSockets()
