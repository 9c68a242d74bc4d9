"""ASGI session middleware (Starlette, FastAPI, Quart, any ASGI app).

::

    from persession.asgi import SessionMiddleware

    app = SessionMiddleware(app, secret=["new-key", "old-key"])

The session is a :class:`~persession.Session` (a ``dict``) at
``scope["session"]``, where Starlette's ``request.session`` finds it. It is
loaded when the request starts and committed once, when the response starts
(``http.response.start``); changes made after that are not saved. Websocket
scopes get the session read-only: no cookie can be set after a handshake.

This is pure ASGI (never ``BaseHTTPMiddleware``), so context variables and
streaming responses behave as without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.compatibility import guarantee_single_callable

from . import _shell
from ._guard_asgi import WebSocketGuard
from ._headers import asgi_headers
from ._live import LIVE_SOCKETS_KEY, LiveSockets
from ._policy import GuardPolicy
from .config import SessionConfig
from .core import Action, Opening, SessionEngine
from .exceptions import SessionNotAvailable, StoreError
from .session import Session
from .stores.base import AsyncRollingLoad, AsyncStore, Store, arun_plan
from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SessionMiddleware", "get_session", "live_sockets"]

_UNAVAILABLE_HEADERS = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _shell.UNAVAILABLE_HEADERS]
_ERROR_HEADERS = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _shell.ERROR_HEADERS]


def get_session(scope: Scope) -> Session:
    """The session of this request or websocket.

    :raises SessionNotAvailable: no persession middleware wraps the app.
    """
    session = scope.get("session")
    if not isinstance(session, Session):
        raise SessionNotAvailable(
            "no persession session in this scope", "wrap the app in persession.asgi.SessionMiddleware"
        )
    session.mark_accessed()
    return session


def live_sockets(scope: Scope) -> LiveSockets:
    """The :class:`~persession.guard.LiveSockets` of the middleware serving ``scope``.

    ``live_sockets(request.scope).revoke(sid)`` closes the guarded websockets
    of a session this code deleted itself (``revoke_user`` on a store without
    a revocation feed).

    :raises SessionNotAvailable: no persession middleware wraps the app.
    """
    registry = scope.get(LIVE_SOCKETS_KEY)
    if not isinstance(registry, LiveSockets):
        raise SessionNotAvailable(
            "no persession middleware serves this scope", "wrap the app in persession.asgi.SessionMiddleware"
        )
    return registry


class SessionMiddleware:
    """Server-side sessions for an ASGI application.

    :param app: the application to wrap (ASGI 3, or ASGI 2 double-callable);
        positional only, so ``app.add_middleware(SessionMiddleware, ...)``
        (Starlette, FastAPI) type-checks.
    :param secret: secret key(s), newest first; see
        :attr:`SessionConfig.secret <persession.SessionConfig.secret>`.
    :param store: an :class:`~persession.stores.AsyncStore`; a sync store
        with ``to_async()`` (as :func:`~persession.stores.store_from_url`
        returns), whose asyncio twin is used; or a store URL such as
        ``"redis://cache:6379/0"``, which becomes
        ``store_from_url(url).to_async()``. Default an
        :class:`~persession.stores.AsyncSqliteStore` on the default file.
    :param config: a :class:`~persession.SessionConfig` instead of ``secret``
        and ``options``.
    :param clock: returns the current Unix time (tests).
    :param websocket_guard: refuse websocket handshakes of logged-out users
        and foreign origins before the app sees them, and close accepted ones
        (code 4001) when their session ends: ``True`` for the default
        :class:`~persession.guard.GuardPolicy`, or a policy. Default ``None``.
    :param session_class: the class of the sessions: :class:`~persession.Session`
        or a subclass declaring ``__slots__ = ()``.
    :param options: any other :class:`~persession.SessionConfig` field.
    :raises ConfigError: a bad option, named; a malformed store URL (as
        :func:`~persession.stores.store_from_url` raises it).

    A store failure while loading makes every use of the session raise
    :class:`~persession.StoreError`; if the application lets it (or any
    ``StoreError``) escape, or the final save fails, the client gets ``503``
    with ``Retry-After`` and no traceback. That holds for frameworks that
    send their own 500 page first (Starlette does, then re-raises): a 500 is
    held back until the application returns, and a 500 from an application
    whose session failed to load is answered with the 503. A session that
    cannot be saved (over ``max_size``, or a value made unserialisable in
    place) is not written: the client gets a clean 500 and ``persession``
    logs an ERROR.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        # Positional only: Starlette's middleware factory protocol passes the app positionally and
        # leaves an ``app=`` keyword to **options, which a keyword-capable parameter would shadow.
        app: ASGIApp | Callable[..., Any],
        /,
        *,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        store: AsyncStore | Store | str | None = None,
        config: SessionConfig | None = None,
        clock: Callable[[], float] = time.time,
        websocket_guard: GuardPolicy | bool | None = None,
        session_class: type[Session] = Session,
        **options: Any,
    ) -> None:
        self.app: ASGIApp = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.engine: SessionEngine = _shell.make_engine(secret, config, options, clock, session_class)
        self.config: SessionConfig = self.engine.config
        self.store: AsyncStore = _shell.async_store(store)
        #: The guarded websockets under this middleware: closed when a request ends their session.
        self.live_sockets: LiveSockets = LiveSockets(self.store)
        if websocket_guard:
            policy = websocket_guard if isinstance(websocket_guard, GuardPolicy) else None
            self.app = WebSocketGuard(self.app, policy=policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        cookies: list[bytes] = []
        forwarded_proto: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookies.append(value)
            elif name == b"x-forwarded-proto":  # repeated lines read as one list, as WSGI servers join them
                text = value.decode("latin-1")
                forwarded_proto = text if forwarded_proto is None else f"{forwarded_proto},{text}"
        engine = self.engine
        opening = engine.open(cookies)
        session = await self._load(opening, read_only=kind == "websocket")
        scope["session"] = session
        scope[LIVE_SOCKETS_KEY] = self.live_sockets
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        secure = engine.request_is_secure(scope.get("scheme", "http"), forwarded_proto, proxy=self.config.proxy)
        await self._http(scope, receive, send, session, opening, secure)

    async def _load(self, opening: Opening, *, read_only: bool) -> Session:
        if opening.sid is None:
            return self.engine.build(opening, None, read_only=read_only)
        # rolling: load and refresh the expiry in one round trip when the store can.
        rolling: AsyncRollingLoad | None = None
        if self.engine.rolling_load(read_only=read_only) and isinstance(self.store, AsyncRollingLoad):
            rolling = self.store
        try:
            if rolling is not None:
                record = await rolling.load_touch(opening.sid, self.config.idle_seconds, self.config.absolute_seconds)
            else:
                record = await self.store.load(opening.sid)
        except StoreError as error:
            _shell.log_unavailable(error)
            return self.engine.unavailable(error)
        return self.engine.build(opening, record, read_only=read_only, refreshed=rolling is not None)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, session: Session, opening: Opening, secure: bool
    ) -> None:
        started = False
        failed = False
        # A 500 waits here until the app returns: Starlette sends its error page and then
        # re-raises, and a StoreError behind that page must still become the 503.
        held: list[Message] | None = None

        async def release() -> None:
            nonlocal held
            messages, held = held or [], None
            for message in messages:
                await send(message)

        async def send_wrapper(message: Message) -> None:
            nonlocal started, failed, held
            if failed:
                return  # a 503 (or 500) went out instead of the application's response
            if held is not None:
                held.append(message)
                if message.get("more_body", False):
                    await release()  # a streamed body is not an error page: stop holding it
                return
            if message["type"] == "http.response.start" and not started:
                started = True
                if self.engine.unavailable_instead(session, message["status"]):
                    # The framework's error page for the StoreError the session raised (logged at load).
                    failed = True
                    await _send_unavailable(send)
                    return
                try:
                    plan = self.engine.plan(session, opening, status=message["status"], secure_request=secure)
                    if plan.action is not Action.NOTHING:
                        await arun_plan(self.store, plan)
                except StoreError as error:
                    failed = True
                    _shell.log_unavailable(error)
                    await _send_unavailable(send)
                    return
                except _shell.UNSAVABLE as error:
                    # Over max_size, or a value gone bad in place: nothing was written (plans and
                    # stores check before any I/O), so the store keeps the previous version.
                    failed = True
                    _shell.log_unsavable(error)
                    await _send_error(send)
                    return
                self.live_sockets.after_plan(plan)  # websockets of a deleted or replaced session close
                headers = asgi_headers(message.get("headers", ()), plan)
                if headers is not None:
                    message = {**message, "headers": headers}
                if message["status"] == 500:
                    held = [message]
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except StoreError as error:
            if started and not failed and held is None:
                raise  # the response is already on its way
            if not failed:
                _shell.log_unavailable(error)
                await _send_unavailable(send)
            return
        except Exception:
            await release()
            raise
        await release()


async def _send_error(send: Send) -> None:
    await send({"type": "http.response.start", "status": _shell.ERROR_STATUS, "headers": _ERROR_HEADERS})
    await send({"type": "http.response.body", "body": _shell.ERROR_BODY})


async def _send_unavailable(send: Send) -> None:
    await send({"type": "http.response.start", "status": _shell.UNAVAILABLE_STATUS, "headers": _UNAVAILABLE_HEADERS})
    await send({"type": "http.response.body", "body": _shell.UNAVAILABLE_BODY})
