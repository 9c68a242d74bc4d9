"""python-socketio: the session in event handlers, and no transport for strangers.

::

    import socketio
    from persession.asgi import SessionMiddleware
    from persession.integrations.socketio import SocketIOGuard, get_session

    sio = socketio.AsyncServer(async_mode="asgi")

    @sio.event
    async def connect(sid, environ, auth):
        session = get_session(environ)          # the session of the handshake request
        await sio.save_session(sid, {"user": session["user"]})

    app = SessionMiddleware(SocketIOGuard(socketio.ASGIApp(sio, other_app)), secret=..., store=...)

:class:`SocketIOGuard` (ASGI) and :class:`WSGISocketIOGuard` (WSGI) check
**every request under the Socket.IO path** with a
:class:`~persession.guard.GuardPolicy`: the Engine.IO handshake (the first
polling ``GET /socket.io/?EIO=4&transport=polling``, or a direct websocket
upgrade) of a logged-out client is answered ``401`` (``403`` for a foreign
``Origin``) before any transport opens, so the ``connect`` handler only ever
sees logged-in sessions. Later polling requests are checked too, so a
logged-out client's long-polling transport fails at its next request; a
websocket transport is closed with code 4001 when the session ends (see
:mod:`persession.guard`; ASGI only).

Browsers may omit ``Origin`` on same-origin polling ``GET`` requests: keep
``OriginPolicy(allow_missing_origin=True)`` (the default) unless clients use
the websocket transport only.

The session handlers see is that of the handshake request, whose response
has started: read it, never write it (changes are not saved). This module
does not import python-socketio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._guard_asgi import DENIAL_HEADERS
from ..exceptions import SessionNotAvailable
from ..guard import GuardPolicy, WebSocketGuard, WSGIWebSocketGuard
from ..session import Session

__all__ = ["SocketIOGuard", "WSGISocketIOGuard", "get_session"]

_DEFAULT_PATH = "/socket.io"


def get_session(environ: Mapping[str, Any]) -> Session:
    """The persession session of a Socket.IO connection, from the ``environ`` its handlers get.

    Under ASGI that is ``environ["asgi.scope"]["session"]``; under WSGI
    ``environ["persession.session"]``.

    :raises SessionNotAvailable: no persession middleware wraps the Socket.IO app.

    .. versionadded:: 0.1
    """
    scope = environ.get("asgi.scope")
    session = scope.get("session") if isinstance(scope, Mapping) else environ.get("persession.session")
    if not isinstance(session, Session):
        raise SessionNotAvailable(
            "no persession session in this Socket.IO environ",
            "wrap the socketio.ASGIApp / socketio.WSGIApp in persession's SessionMiddleware",
        )
    session.mark_accessed()
    return session


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


class SocketIOGuard(WebSocketGuard):
    """Refuse Socket.IO requests of logged-out users and foreign origins (ASGI), at the handshake.

    Every HTTP request and websocket under ``path`` is checked with
    ``policy``; other requests pass untouched. Refused HTTP requests get
    ``401``/``403``; websockets are refused as by
    :class:`~persession.guard.WebSocketGuard`, whose options this takes.

    :param app: the ASGI application (``socketio.ASGIApp``, or an app mounting it).
    :param path: the Socket.IO path; default ``"/socket.io"``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Any,
        *,
        path: str = _DEFAULT_PATH,
        policy: GuardPolicy | None = None,
        **options: Any,
    ) -> None:
        super().__init__(app, policy=policy, **options)
        self.path: str = path.rstrip("/")

    async def _guard(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http" and _under(scope.get("path", ""), self.path) and self.policy.guards(scope["path"]):
            refusal = self._check(scope)[1]
            if refusal is None:
                await self.app(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": refusal.status, "headers": DENIAL_HEADERS})
            await send({"type": "http.response.body", "body": f"{refusal.reason}\n".encode()})
        elif kind == "websocket" and not _under(scope.get("path", ""), self.path):
            await self.app(scope, receive, send)
        else:
            await super()._guard(scope, receive, send)


class WSGISocketIOGuard(WSGIWebSocketGuard):
    """The WSGI twin of :class:`SocketIOGuard` (``socketio.WSGIApp``): every request under ``path`` is checked.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Any,
        *,
        path: str = _DEFAULT_PATH,
        policy: GuardPolicy | None = None,
        **options: Any,
    ) -> None:
        super().__init__(app, policy=policy, **options)
        self.path: str = path.rstrip("/")

    def _guard(self, environ: Any, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if _under(path, self.path) and self.policy.guards(path):
            return self._checked(environ, start_response)
        return self.app(environ, start_response)
