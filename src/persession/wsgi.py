"""WSGI session middleware (Flask, Django, Pyramid, Bottle, any WSGI app).

::

    from persession.wsgi import SessionMiddleware

    app.wsgi_app = SessionMiddleware(app.wsgi_app, secret="change-me")

The session is a :class:`~persession.Session` (a ``dict``) at
``environ["persession.session"]``; :func:`get_session` fetches it. It is
loaded as the request starts and committed once, when the application calls
``start_response``; changes made after that (for example while a streamed
body is generated) are not saved. ``Upgrade: websocket`` requests (flask-sock,
simple-websocket) get the session read-only.

With a store that implements :class:`~persession.stores.PrefetchLoad`
(:class:`~persession.stores.redis.RedisStore`) the load is sent as the
request starts and its answer read at the session's first use (or when the
response starts, if the application never uses it): the store works while
the framework routes the request, instead of the worker waiting for it. The
session is then a :class:`DeferredSession`; it holds what the store had when
the load was sent, as if it had been loaded then, and a store failure
surfaces at the first use, as a failed load's does. Until then the request
holds one of the store's pooled connections.

With a store that implements :class:`~persession.stores.SplitWrite` (the same
:class:`~persession.stores.redis.RedisStore`) a merge or touch is sent when
the application calls ``start_response`` (or earlier, through
``environ[COMMIT_KEY]``, which Flask's ``save_session`` calls) and its answer
read just before the response's first byte goes out: the real
``start_response`` is held until then, so a failed write still answers 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _shell
from ._guard_wsgi import WSGIWebSocketGuard
from ._policy import GuardPolicy
from ._prefetch import DeferredSession, Prefetcher, split_response
from ._wsgi_response import Response, respond
from .config import SessionConfig
from .core import Opening, SessionEngine
from .exceptions import SessionNotAvailable, StoreError
from .session import Session
from .stores.base import PrefetchLoad, RollingLoad, Store

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["COMMIT_KEY", "ENVIRON_KEY", "DeferredSession", "SessionMiddleware", "get_session"]

#: Where the session lives in the WSGI environ.
ENVIRON_KEY = "persession.session"
#: ``environ[COMMIT_KEY](status)`` commits the session before ``start_response``, for a framework
#: that knows the status earlier (Flask's ``save_session``): the store's write is then sent sooner.
COMMIT_KEY = "persession.commit"


def get_session(environ: WSGIEnvironment) -> Session:
    """The session of this request.

    :raises SessionNotAvailable: no persession middleware wraps the app.
    """
    session = environ.get(ENVIRON_KEY)
    if not isinstance(session, Session):
        raise SessionNotAvailable(
            "no persession session in this environ", "wrap the app in persession.wsgi.SessionMiddleware"
        )
    session.mark_accessed()
    return session


class SessionMiddleware:
    """Server-side sessions for a WSGI application.

    :param app: the WSGI application to wrap.
    :param secret: secret key(s), newest first; see
        :attr:`SessionConfig.secret <persession.SessionConfig.secret>`.
    :param store: a synchronous :class:`~persession.stores.Store`, or a store
        URL such as ``"sqlite:///var/lib/app/sessions.db"`` or
        ``"redis://cache:6379/0"``, built by
        :func:`~persession.stores.store_from_url`; default a
        :class:`~persession.stores.SqliteStore` on the default file.
    :param config: a :class:`~persession.SessionConfig` instead of ``secret``
        and ``options``.
    :param clock: returns the current Unix time (tests).
    :param websocket_guard: refuse websocket handshakes of logged-out users
        and foreign origins before the app sees them: ``True`` for the default
        :class:`~persession.guard.GuardPolicy`, or a policy. Default ``None``.
    :param session_class: the class of the sessions: :class:`~persession.Session`
        or a subclass declaring ``__slots__ = ()`` (Flask's ``init_app`` passes
        :class:`~persession.integrations.flask.FlaskSession`).
    :param options: any other :class:`~persession.SessionConfig` field.
    :raises ConfigError: a bad option, named; a malformed store URL (as
        :func:`~persession.stores.store_from_url` raises it).

    A store failure while loading makes every use of the session raise
    :class:`~persession.StoreError`; if the application lets it escape, or
    answers 500 because of it (Flask catches it and does), or the final save
    fails, the client gets ``503`` with ``Retry-After`` and no traceback. A
    session that cannot be saved (over ``max_size``, or a value made
    unserialisable in place) is not written: the client gets a clean 500 and
    ``persession`` logs an ERROR.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        store: Store | str | None = None,
        config: SessionConfig | None = None,
        clock: Callable[[], float] = time.time,
        websocket_guard: GuardPolicy | bool | None = None,
        session_class: type[Session] = Session,
        **options: Any,
    ) -> None:
        self.app: WSGIApplication = app
        if websocket_guard:
            policy = websocket_guard if isinstance(websocket_guard, GuardPolicy) else None
            self.app = WSGIWebSocketGuard(app, policy=policy)
        self.engine: SessionEngine = _shell.make_engine(secret, config, options, clock, session_class)
        self.config: SessionConfig = self.engine.config
        self.store: Store = _shell.sync_store(store)
        # Checked once: isinstance() against a runtime protocol walks its attributes every time.
        self._rolling: RollingLoad | None = self.store if isinstance(self.store, RollingLoad) else None
        #: How a request's session is loaded and its response made: the plain path, or the
        #: split layer (persession._prefetch) for a store whose round trips it can overlap.
        self._open: Callable[[Opening, bool], Session] = self._load
        if isinstance(self.store, PrefetchLoad):
            self._open = Prefetcher(self.engine, self.store, self._load)
        self._response: Callable[..., Response] = split_response(self.store) or Response

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        engine = self.engine
        opening = engine.open(environ.get("HTTP_COOKIE"))
        session = self._open(opening, environ.get("HTTP_UPGRADE", "").lower() == "websocket")
        environ[ENVIRON_KEY] = session
        secure = engine.request_is_secure(
            environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_X_FORWARDED_PROTO"), proxy=self.config.proxy
        )
        response = self._response(engine, self.store, session, opening, secure, start_response)
        environ[COMMIT_KEY] = response.commit
        return respond(self.app, environ, response)

    def _load(self, opening: Opening, read_only: bool) -> Session:
        sid = opening.sid
        if sid is None:
            return self.engine.build(opening, None, read_only=read_only)
        # rolling: load and refresh the expiry in one round trip when the store can.
        rolling = self._rolling if self.engine.rolling_load(read_only=read_only) else None
        try:
            if rolling is not None:
                record = rolling.load_touch(sid, self.config.idle_seconds, self.config.absolute_seconds)
            else:
                record = self.store.load(sid)
        except StoreError as error:
            _shell.log_unavailable(error)
            return self.engine.unavailable(error)
        return self.engine.build(opening, record, read_only=read_only, refreshed=rolling is not None)
