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
session holds what the store had when the load was sent, as if it had been
loaded then; a store failure surfaces at the first use, as a failed load's
does. Until then the request holds one of the store's pooled connections.

With a store that implements :class:`~persession.stores.SplitWrite` (the same
:class:`~persession.stores.redis.RedisStore`) a merge or touch is sent when
the application calls ``start_response`` (or earlier, through
``environ[COMMIT_KEY]``, which Flask's ``save_session`` calls) and its answer
read just before the response's first byte goes out: the real
``start_response`` is held until then, so a failed write still answers 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import _shell
from .config import SessionConfig
from .core import Opening, Plan, SessionEngine, add_vary_cookie
from .exceptions import SessionNotAvailable, StoreError
from .guard import GuardPolicy, WSGIWebSocketGuard
from .session import Session
from .stores.base import PendingLoad, PendingWrite, PrefetchLoad, RollingLoad, SplitWrite, Store, run_plan

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["COMMIT_KEY", "ENVIRON_KEY", "SessionMiddleware", "get_session"]

#: Where the session lives in the WSGI environ.
ENVIRON_KEY = "persession.session"
#: ``environ[COMMIT_KEY](status)`` commits the session before ``start_response``, for a framework
#: that knows the status earlier (Flask's ``save_session``): the store's write is then sent sooner.
COMMIT_KEY = "persession.commit"
_UNAVAILABLE_STATUS = "503 Service Unavailable"


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
        **options: Any,
    ) -> None:
        self.app: WSGIApplication = app
        if websocket_guard:
            policy = websocket_guard if isinstance(websocket_guard, GuardPolicy) else None
            self.app = WSGIWebSocketGuard(app, policy=policy)
        self.engine: SessionEngine = _shell.make_engine(secret, config, options, clock)
        self.config: SessionConfig = self.engine.config
        self.store: Store = _shell.sync_store(store)
        # Checked once: isinstance() against a runtime protocol walks its attributes every time.
        self._prefetcher: PrefetchLoad | None = self.store if isinstance(self.store, PrefetchLoad) else None
        self._rolling: RollingLoad | None = self.store if isinstance(self.store, RollingLoad) else None
        self._splitter: SplitWrite | None = self.store if isinstance(self.store, SplitWrite) else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        engine = self.engine
        opening = engine.open(environ.get("HTTP_COOKIE"))
        read_only = environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        session = self._load(opening, read_only=read_only)
        environ[ENVIRON_KEY] = session
        secure = engine.request_is_secure(
            environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_X_FORWARDED_PROTO"), proxy=self.config.proxy
        )
        state = _Response(self, session, opening, secure, start_response)
        environ[COMMIT_KEY] = state.commit
        try:
            result = self.app(environ, state.start_response)
        except StoreError as error:
            state.abandon()
            if state.started and not state.failed:
                raise
            return state.unavailable(error)
        except BaseException:
            state.abandon()  # a prefetched load or a sent write gives its connection back
            raise
        if state.failed:
            _close(result)
            return [state.body]
        if state.started and state.pending is None:
            return result
        # start_response not called yet (it comes with a generator's first chunk), or the write is
        # on its way (its answer is read before the first byte goes out).
        return _Deferred(result, state)

    def _load(self, opening: Opening, *, read_only: bool) -> Session:
        sid = opening.sid
        if sid is None:
            return self.engine.build(opening, None, read_only=read_only)
        # rolling: load and refresh the expiry in one round trip when the store can.
        refresh = self.engine.rolling_load(read_only=read_only)
        prefetcher = self._prefetcher
        if prefetcher is not None and not read_only:
            # Send the load now, read the answer when the application first uses the session:
            # the store works while the framework routes the request.
            config = self.config
            try:
                pending = prefetcher.prefetch(sid, (config.idle_seconds, config.absolute_seconds) if refresh else None)
            except StoreError as error:
                _shell.log_unavailable(error)
                return Session.unavailable(error)
            return Session.deferred(
                lambda: self._finish(opening, pending, refreshed=refresh), user_path=config.user_path
            )
        try:
            if refresh and self._rolling is not None:
                record = self._rolling.load_touch(sid, self.config.idle_seconds, self.config.absolute_seconds)
            else:
                refresh = False
                record = self.store.load(sid)
        except StoreError as error:
            _shell.log_unavailable(error)
            return Session.unavailable(error)
        return self.engine.build(opening, record, read_only=read_only, refreshed=refresh)

    def _finish(self, opening: Opening, pending: PendingLoad, *, refreshed: bool) -> Session:
        """The session of a prefetched load, once its answer is read."""
        try:
            record = pending.result()
        except StoreError as error:
            _shell.log_unavailable(error)
            return Session.unavailable(error)
        return self.engine.build(opening, record, refreshed=refreshed)


class _Response:
    """One request's commit point: wraps ``start_response``.

    With a :class:`~persession.stores.SplitWrite` store the write is sent
    when the application calls ``start_response`` and the real
    ``start_response`` is held until :meth:`confirm` has read the store's
    answer, just before the first byte of the body goes out (PEP 3333 lets
    an application call it that late): a failed write can still answer 503.
    """

    __slots__ = (
        "body",
        "committed",
        "error",
        "failed",
        "held",
        "middleware",
        "opening",
        "pending",
        "plan",
        "real_start_response",
        "real_write",
        "secure",
        "session",
        "started",
    )

    def __init__(
        self,
        middleware: SessionMiddleware,
        session: Session,
        opening: Opening,
        secure: bool,
        start_response: StartResponse,
    ) -> None:
        self.middleware = middleware
        self.session = session
        self.opening = opening
        self.secure = secure
        self.real_start_response = start_response
        self.started = False
        #: persession answered instead of the application (503, or 500), with ``body``.
        self.failed = False
        self.body = _shell.UNAVAILABLE_BODY
        #: The write sent and not confirmed yet, and the ``start_response`` arguments held for it.
        self.pending: PendingWrite | None = None
        self.held: tuple[str, list[tuple[str, str]], OptExcInfo | None] | None = None
        self.real_write: Callable[[bytes], object] = _discard
        #: What :meth:`commit` decided, or the error it met (a StoreError, or an unsavable session).
        self.committed = False
        self.plan: Plan | None = None
        self.error: Exception | None = None

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if self.failed:
            return _discard
        if self.started:  # a second call, with exc_info, replaces the response: commit only once
            if self.pending is not None:
                self.held = (status, headers, exc_info)
                return self.write
            return self.real_start_response(status, headers, exc_info)
        self.started = True
        code = _status_code(status)
        if code == 500 and self.session.failed is not None and self.session.accessed:
            # The framework's 500 page for the StoreError the session raised (logged at load).
            self.abandon()
            self.failed = True
            self.real_start_response(_UNAVAILABLE_STATUS, list(_shell.UNAVAILABLE_HEADERS))
            return _discard
        self.commit(code)
        plan, error = self.plan, self.error
        if isinstance(error, StoreError):
            self.unavailable(error)
            return _discard
        if error is not None:
            # Over max_size, or a value gone bad in place: nothing was written (plans and
            # stores check before any I/O), so the store keeps the previous version.
            self.failed = True
            self.body = _shell.ERROR_BODY
            _shell.log_unsavable(error)
            self.real_start_response(f"{_shell.ERROR_STATUS} Internal Server Error", list(_shell.ERROR_HEADERS))
            return _discard
        assert plan is not None  # noqa: S101  (commit sets one of the two)
        if plan.set_cookie is not None or plan.vary:
            headers = list(headers)
            if plan.set_cookie is not None:
                headers.append(("Set-Cookie", plan.set_cookie))
            if plan.vary:
                for index, (name, value) in enumerate(headers):
                    if name.lower() == "vary":
                        headers[index] = (name, add_vary_cookie(value))
                        break
                else:
                    headers.append(("Vary", "Cookie"))
        if self.pending is not None:
            self.held = (status, headers, exc_info)
            return self.write
        return self.real_start_response(status, headers, exc_info)

    def commit(self, status: int) -> None:
        """Decide what the session needs and send (or carry out) the store's write, once.

        ``start_response`` calls it; Flask's ``save_session`` calls it sooner,
        through ``environ[COMMIT_KEY]``, with the response's status. Errors
        are kept for ``start_response`` to answer.
        """
        if self.committed:
            return
        self.committed = True
        self.session.ensure_loaded()
        middleware = self.middleware
        try:
            plan = middleware.engine.plan(self.session, self.opening, status=status, secure_request=self.secure)
            if middleware._splitter is not None:
                self.pending = middleware._splitter.send_plan(plan)
            else:
                run_plan(middleware.store, plan)
        except StoreError as error:
            self.error = error
        except _shell.UNSAVABLE as error:
            self.error = error
        else:
            self.plan = plan

    def confirm(self) -> bool:
        """Read the answer to the write sent, then start the real response; ``False``: it failed (503 instead)."""
        pending = self.pending
        if pending is None:
            return not self.failed
        self.pending = None
        try:
            pending.result()
        except StoreError as error:
            self.unavailable(error)
            return False
        assert self.held is not None  # noqa: S101  (held with every pending write)
        status, headers, exc_info = self.held
        self.held = None
        self.real_write = self.real_start_response(status, headers, exc_info)
        return True

    def write(self, data: bytes) -> object:
        """``start_response``'s ``write`` (PEP 3333's imperative output), once the write is confirmed."""
        if self.pending is not None:
            self.confirm()
        return self.real_write(data)

    def abandon(self) -> None:
        """The response will not be sent: read what the store still owes (a failed write is only logged)."""
        self.session.ensure_loaded()
        pending, self.pending = self.pending, None
        if pending is not None:
            try:
                pending.result()
            except StoreError as error:
                _shell.log_unavailable(error)

    def unavailable(self, error: StoreError) -> list[bytes]:
        """Answer 503 instead of the application, once.

        Only ever the first real ``start_response`` call, so no ``exc_info``:
        test clients (Werkzeug's, Flask's, httpx's) raise any they are given.
        """
        if not self.failed:
            self.failed = True
            _shell.log_unavailable(error)
            self.real_start_response(_UNAVAILABLE_STATUS, list(_shell.UNAVAILABLE_HEADERS))
        return [self.body]


class _Deferred:
    """The app's iterable, when the real ``start_response`` comes with its first chunk.

    Either the app calls ``start_response`` on first iteration (a generator),
    or a sent write must be confirmed first (:meth:`_Response.confirm`).
    """

    def __init__(self, result: Iterable[bytes], state: _Response) -> None:
        self.result = result
        self.state = state

    def __iter__(self) -> Iterator[bytes]:
        state = self.state
        try:
            for chunk in self.result:
                if state.pending is not None:
                    state.confirm()
                if state.failed:
                    break
                yield chunk
            if state.pending is not None:  # an empty body
                state.confirm()
        except StoreError as error:
            state.abandon()
            if state.started and not state.failed:
                raise
            if not state.failed:
                state.unavailable(error)
        if state.failed:
            yield state.body

    def close(self) -> None:
        try:
            _close(self.result)
        finally:
            self.state.abandon()  # never sent: a prefetched load or a sent write gives its connection back


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _discard(_: bytes) -> None:
    return None


def _status_code(status: str) -> int:
    try:
        return int(status[:3])
    except ValueError:
        return 500
