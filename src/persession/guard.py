"""Log in, log out, and keep websockets of strangers out.

::

    from persession.guard import login, logout

    login(session, user.id)          # new session id (against fixation) + session["user"]
    logout(session)                  # the session is destroyed, its cookie expired

With ``SessionConfig(compat="express")`` the user is stored where passport
keeps it, ``session["passport"] = {"user": user.id}``, and the default
predicate looks there, so a login on a Node service (passport on
express-session) is a login here too, and the other way round.

A websocket handshake carries the browser's cookies but is not protected by
the same-origin policy: any page can open a websocket to your site, and the
browser sends your users' cookies with it (cross-site websocket hijacking).
The guards refuse, **before the application sees the connection**:

- handshakes whose session is not logged in (``401``), and
- handshakes whose ``Origin`` is not allowed (``403``).

:class:`WebSocketGuard` does it for ASGI (a real HTTP 401/403 when the server
offers the ``websocket.http.response`` extension, else ``websocket.close``
with code 1008 before ``accept``, which servers answer with 403);
:class:`WSGIWebSocketGuard` for WSGI ``Upgrade: websocket`` requests
(flask-sock, simple-websocket, gevent-websocket). Plain HTTP passes untouched.

**Origin policy.** By default only same-origin handshakes pass: the
``Origin``'s host and port must equal the ``Host`` header (or
``X-Forwarded-Host`` with ``trust_forwarded_host=True``, behind a proxy you
trust). ``allowed_origins`` lists other origins, with ``*.`` wildcards for
subdomains (``"https://*.example.com"``). A handshake **without** ``Origin`` is
allowed by default (``allow_missing_origin=True``): every browser sends
``Origin`` on websocket handshakes, so a missing one means a non-browser
client, which cannot be tricked into lending a victim's cookies; it still
needs a logged-in session. Set it to ``False`` to refuse such clients.

**Live websockets follow the session.** An accepted websocket under
:class:`WebSocketGuard` is closed with code **4001** (:data:`REVOKED_CLOSE_CODE`,
reason ``"session revoked"``) when its session ends: the application's
``receive`` returns ``{"type": "websocket.disconnect", "code": 4001}`` and
its later sends are dropped. The session ends

- at once, when a request of the same process logs out, regenerates (logs in
  again) or destroys it: :class:`persession.asgi.SessionMiddleware` reports
  every store delete and replace to :data:`LIVE_SOCKETS`;
- when any process revokes it, if the store has a revocation feed
  (:class:`~persession.stores.base.RevocationFeed`, e.g. ``AsyncRedisStore``
  over pub/sub): one subscriber task per guard, started with its first
  websocket and stopped with its last (or at lifespan shutdown);
- within :attr:`GuardPolicy.recheck_interval` (30 s) otherwise: the guard
  loads the session of each live websocket and closes those whose record is
  gone (destroyed, revoked or expired). It runs with a feed too, since
  pub/sub may lose messages while it reconnects.

Code that deletes sessions itself (``revoke_user`` on a store without a
feed) can call ``LIVE_SOCKETS.revoke(sid)``. WSGI websockets are not followed.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ._live import LIVE_SOCKETS, REVOKED_CLOSE_CODE, LiveSockets, _Live
from ._origin import OriginPolicy
from .core import USER_KEY
from .exceptions import ConfigError, StoreError
from .session import Session
from .stores.base import AsyncStore, RevocationFeed, Store
from .types import Message, Receive, Send

__all__ = [
    "LIVE_SOCKETS",
    "REVOKED_CLOSE_CODE",
    "USER_KEY",
    "GuardPolicy",
    "LiveSockets",
    "OriginPolicy",
    "Refusal",
    "WSGIWebSocketGuard",
    "WebSocketGuard",
    "is_logged_in",
    "login",
    "logout",
]

#: Seconds between two subscriptions to a revocation feed that failed or ended.
_FEED_RETRY: Final = 5.0
log: logging.Logger = logging.getLogger("persession")


# Defined in ._origin and ._live; these are their public names, for reprs and the docs.
OriginPolicy.__module__ = LiveSockets.__module__ = __name__


def login(session: Session, user: str | int, **extra: Any) -> None:
    """Log ``user`` in: a new session id (against fixation), then ``session["user"] = user``.

    In express mode (``SessionConfig(compat="express")``, the session's
    :attr:`~persession.Session.user_path` is ``("passport", "user")``) it sets
    ``session["passport"] = {"user": user}`` as passport's ``req.login()``
    does, keeping any other member of ``passport``.

    ``extra`` keys are stored too. The store indexes the session under
    ``str(user)``, so :meth:`~persession.stores.UserIndex.user_sessions` and
    :meth:`~persession.stores.UserIndex.revoke_user` find it.

    .. versionadded:: 0.1
    """
    session.regenerate()
    _put(session, session.user_path, user)
    for key, value in extra.items():
        session[key] = value
    session.mark_login(str(user))


def _put(session: Session, path: tuple[str, ...], value: object) -> None:
    """``session[path[0]]...[path[-1]] = value``, assigning the top-level key so the change is recorded."""
    head, *rest = path
    if not rest:
        session[head] = value
        return
    top = session.get(head)
    top = copy.deepcopy(top) if isinstance(top, dict) else {}
    inner = top
    for key in rest[:-1]:
        child = inner.get(key)
        inner[key] = child if isinstance(child, dict) else {}
        inner = inner[key]
    inner[rest[-1]] = value
    session[head] = top


def _user_of(session: Session) -> Any:
    value: Any = session
    for key in session.user_path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def logout(session: Session) -> None:
    """Log out: the session is deleted from the store and its cookie expired.

    .. versionadded:: 0.1
    """
    session.destroy()


def is_logged_in(session: Session) -> bool:
    """The default "logged in" predicate: ``session["user"]`` is set (by :func:`login`).

    In express mode: ``session["passport"]["user"]`` is set (by :func:`login`, or by passport).
    """
    return _user_of(session) is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake was refused."""

    #: The HTTP status: 401 (not logged in) or 403 (origin).
    status: int
    #: A short reason, safe to send to the client.
    reason: str


_NOT_LOGGED_IN = Refusal(401, "login required")
_BAD_ORIGIN = Refusal(403, "origin not allowed")


@dataclass(frozen=True)
class GuardPolicy:
    """What the websocket guards check: the session predicate, the origin, the paths.

    :param predicate: ``predicate(session) -> bool``, "is this session allowed
        a websocket"; default :func:`is_logged_in`.
    :param origins: the :class:`OriginPolicy`; default same-origin only.
    :param include: path prefixes guarded; default every path.
    :param exclude: path prefixes never guarded (checked first).
    :param recheck_interval: seconds between two checks that the sessions of
        live websockets still exist (those whose record is gone are closed
        with code 4001); default 30, ``None`` to never re-check. Needs the
        guard to know the store (see :class:`WebSocketGuard`).

    .. versionadded:: 0.1
    """

    predicate: Callable[[Session], bool] = is_logged_in
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    include: Sequence[str] = ("/",)
    exclude: Sequence[str] = ()
    recheck_interval: float | None = 30.0

    def __post_init__(self) -> None:
        if self.recheck_interval is not None and not self.recheck_interval > 0:
            raise ConfigError("recheck_interval", "must be a positive number of seconds, or None")

    def guards(self, path: str) -> bool:
        """Whether websocket handshakes to ``path`` are checked."""
        if any(path.startswith(prefix) for prefix in self.exclude):
            return False
        return any(path.startswith(prefix) for prefix in self.include)

    def check(
        self, session: Session | None, origin: str | None, host: str | None, forwarded_host: str | None
    ) -> Refusal | None:
        """``None`` when the handshake may proceed, else why not. The origin is checked first."""
        if not self.origins.allows(origin, host, forwarded_host):
            return _BAD_ORIGIN
        if session is None or session.failed is not None or not self.predicate(session):
            return _NOT_LOGGED_IN
        return None


def _first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


_DENIAL_HEADERS: Final = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]


class WebSocketGuard:
    """Refuse websocket handshakes of logged-out users and foreign origins (ASGI).

    Inside :class:`persession.asgi.SessionMiddleware` (which loads the session
    read-only for websocket scopes), or standalone with the same ``secret``,
    ``store`` and options, in which case it builds that middleware around
    itself. ``SessionMiddleware(app, websocket_guard=GuardPolicy(...))`` is the
    same as wrapping ``app`` in this guard, and gives it the middleware's store.

    Accepted websockets follow their session (see the module docs): they are
    closed with code 4001 when it is destroyed or revoked.

    :param app: the ASGI application.
    :param policy: what to check; default :class:`GuardPolicy` (logged in, same origin).
    :param secret: for standalone use: as :class:`persession.asgi.SessionMiddleware`.
    :param store: the session store; for standalone use, as the middleware's.
        Without ``secret`` (the guard inside a middleware you built), the
        store the middleware uses, for the revocation feed and the re-check;
        without it only revocations made in this process close websockets.
    :param options: for standalone use: ``config`` and any
        :class:`~persession.SessionConfig` option.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Any,
        *,
        policy: GuardPolicy | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        store: AsyncStore | Store | str | None = None,
        **options: Any,
    ) -> None:
        from asgiref.compatibility import guarantee_single_callable

        self.app: Any = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.policy: GuardPolicy = policy if policy is not None else GuardPolicy()
        self._entry: Any = self._guard
        #: The store whose sessions live websockets follow, if known.
        self.store: AsyncStore | None = None
        self._live: set[_Live] = set()
        self._tasks: list[asyncio.Task[None]] = []
        if secret is not None or "config" in options:
            from .asgi import SessionMiddleware

            middleware = SessionMiddleware(self._guard, secret=secret, store=store, **options)
            self._entry, self.store = middleware, middleware.store
        elif options:
            raise ConfigError(sorted(options)[0], "session options need secret= or config= (standalone guard)")
        elif store is not None:
            from ._shell import async_store

            self.store = async_store(store)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._entry(scope, receive, send)

    async def _guard(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if scope["type"] != "websocket" or not self.policy.guards(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        session, refusal = self._check(scope)
        if refusal is not None:
            await _deny_websocket(scope, receive, send, refusal)
        elif session is None or session.id is None:
            await self.app(scope, receive, send)  # a predicate that admits unstored sessions: nothing to follow
        else:
            await self._follow(session.id, scope, receive, send)

    def _check(self, scope: Any) -> tuple[Session | None, Refusal | None]:
        """The scope's session, and why the policy refuses it (``None``: it may proceed)."""
        headers = scope.get("headers", ())
        session = scope.get("session")
        session = session if isinstance(session, Session) else None
        origin, host, forwarded = (_first(headers, name) for name in (b"origin", b"host", b"x-forwarded-host"))
        return session, self.policy.check(session, origin, host, forwarded)

    async def _follow(self, sid: str, scope: Any, receive: Receive, send: Send) -> None:
        live = _Live(sid, receive, send)
        self._live.add(live)
        LIVE_SOCKETS._add(live)
        if not self._tasks:
            self._start()
        try:
            await self.app(scope, live.receive, live.send)
        finally:
            LIVE_SOCKETS._discard(live)
            self._live.discard(live)
            if not self._live:
                await self.stop()
            await live.finish()

    def _start(self) -> None:
        store, interval = self.store, self.policy.recheck_interval
        if store is None:
            return
        if isinstance(store, RevocationFeed):
            self._tasks.append(asyncio.create_task(_watch(store)))
        if interval is not None:
            self._tasks.append(asyncio.create_task(self._recheck(store, interval)))

    async def stop(self) -> None:
        """Stop the background tasks (revocation feed, re-check); the next websocket restarts them."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _recheck(self, store: AsyncStore, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for sid in {live.sid for live in self._live}:
                try:
                    gone = await store.load(sid) is None
                except StoreError:
                    continue  # an outage is not a revocation
                if gone:
                    LIVE_SOCKETS.revoke(sid)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await self.stop()
            return message

        return lifespan_receive


async def _watch(feed: RevocationFeed) -> None:
    """Close the websockets of every session the feed reports revoked, resubscribing after failures."""
    while True:
        try:
            async for sid in feed.watch_revocations():
                LIVE_SOCKETS.revoke(sid)
        except StoreError as error:
            log.warning("session revocation feed failed, resubscribing in %ss: %s", _FEED_RETRY, error)
        await asyncio.sleep(_FEED_RETRY)


async def _deny_websocket(scope: Any, receive: Any, send: Any, refusal: Refusal) -> None:
    message = await receive()  # the handshake's websocket.connect
    if message.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": _DENIAL_HEADERS})
        await send({"type": "websocket.http.response.body", "body": f"{refusal.reason}\n".encode()})
    else:
        # Closing before accept: servers answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.reason})


class WSGIWebSocketGuard:
    """Refuse ``Upgrade: websocket`` requests of logged-out users and foreign origins (WSGI).

    For flask-sock, simple-websocket and gevent-websocket, which run the
    websocket inside an ordinary WSGI request. Inside
    :class:`persession.wsgi.SessionMiddleware`, or standalone with a
    ``secret`` and options (it then builds that middleware around itself).
    Refused requests get ``401`` or ``403`` and never reach the application.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Any,
        *,
        policy: GuardPolicy | None = None,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        **options: Any,
    ) -> None:
        self.app: Any = app
        self.policy: GuardPolicy = policy if policy is not None else GuardPolicy()
        self._entry: Any = self._guard
        if secret is not None or "config" in options:
            from .wsgi import SessionMiddleware

            self._entry = SessionMiddleware(self._guard, secret=secret, **options)
        elif options:
            raise ConfigError(sorted(options)[0], "session options need secret= or config= (standalone guard)")

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self._entry(environ, start_response)

    def _guard(self, environ: Any, start_response: Any) -> Any:
        upgrade = environ.get("HTTP_UPGRADE", "").lower()
        if upgrade != "websocket" or not self.policy.guards(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        return self._checked(environ, start_response)

    def _checked(self, environ: Any, start_response: Any) -> Any:
        """The application's answer if the policy admits the request, else 401 or 403."""
        session = environ.get("persession.session")
        refusal = self.policy.check(
            session if isinstance(session, Session) else None,
            environ.get("HTTP_ORIGIN"),
            environ.get("HTTP_HOST"),
            environ.get("HTTP_X_FORWARDED_HOST"),
        )
        if refusal is None:
            return self.app(environ, start_response)
        body = f"{refusal.reason}\n".encode()
        status = "401 Unauthorized" if refusal.status == 401 else "403 Forbidden"
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]
