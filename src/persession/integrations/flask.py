"""Flask: ``flask.session`` is persession's session.

::

    from flask import Flask, session
    from persession.integrations.flask import init_app

    app = Flask(__name__)
    init_app(app, secret="change-me")   # middleware + session interface + 503 handler

    @app.get("/")
    def index():
        session["visits"] = session.get("visits", 0) + 1
        return {"visits": session["visits"]}

:func:`init_app` wraps ``app.wsgi_app`` in :class:`persession.wsgi.SessionMiddleware`
(which loads the session as the request starts -- on Redis, sending the load
then and reading the answer at the session's first use -- and saves it when
the response starts) and installs :class:`PersessionInterface`, which hands Flask
**that same object**: ``flask.session`` is the middleware's
:class:`~persession.Session` (a ``dict``), seen through :class:`FlaskSession`,
which adds Flask's session attributes:

- ``session.modified = True`` re-saves every key (after changing a nested value
  in place), as :meth:`~persession.Session.mark_modified`; ``modified`` reads
  whether the request changed the session;
- ``session.permanent`` tells whether the cookie outlives the browser session:
  ``max_age`` decides that for every session, so setting it to the other value
  raises :class:`~persession.SessionError` (pass ``max_age=None`` for
  browser-session cookies);
- ``session.new`` is ``True`` until the session is stored;
- ``session.regenerate()``, ``destroy()`` and ``touch()`` are persession's.

Flask types ``flask.session`` as its ``SessionMixin``; :func:`get_session`
returns the same object typed as :class:`FlaskSession`, for code checked by
mypy. Flask's ``SESSION_COOKIE_*`` and ``PERMANENT_SESSION_LIFETIME`` settings
do not apply: pass persession's options to :func:`init_app`.

:func:`init_app` also registers an error handler for
:class:`~persession.StoreError`: a view that lets one escape (the session's
store was down when the request started, or the view called the store itself)
answers ``503 Service Unavailable`` with ``Retry-After``, never a 500 page.

This module imports Flask; ``import persession`` never imports it. Install
with ``pip install "persession-web[flask]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn, cast

from flask import Flask, Response, has_request_context
from flask import request as current_request
from flask.sessions import NullSession, SessionInterface, SessionMixin
from flask.wrappers import Request

from .. import _shell
from ..config import DEFAULT_MAX_AGE, SessionConfig
from ..exceptions import ConfigError, SessionError, SessionNotAvailable, StoreError
from ..session import Session
from ..wsgi import COMMIT_KEY, ENVIRON_KEY, SessionMiddleware

__all__ = ["FlaskSession", "MissingSession", "PersessionInterface", "get_session", "init_app"]

#: Where :func:`init_app` records the middleware: ``app.extensions[EXTENSION_KEY]``.
EXTENSION_KEY = "persession"
_HINT = (
    "install persession's middleware and interface: persession.integrations.flask.init_app(app, ...), or build"
    " the middleware with session_class=PersessionInterface().session_class"
)
# What _app_secrets() reads, named for the developer who set neither.
_MISSING_KEY = (
    "a secret is required to sign session ids: pass init_app(app, secret=...) or set"
    ' app.config["SECRET_KEY"] (and SECRET_KEY_FALLBACKS for rotation)'
)


class FlaskSession(Session):
    """persession's :class:`~persession.Session` with Flask's session attributes.

    Not constructed directly: the middleware builds its sessions of this
    class (``session_class=``, which :func:`init_app` passes), so
    ``flask.session`` and ``environ["persession.session"]`` are one object.

    .. versionadded:: 0.1
    """

    __slots__ = ()
    #: Whether cookies outlive the browser session (``max_age`` is not ``None``).
    persistent_cookie: ClassVar[bool] = True

    @property
    def new(self) -> bool:
        """``True`` until the session is stored (Flask's ``SessionMixin.new``)."""
        return self.is_new

    @property
    def modified(self) -> bool:
        """The request changed the session's data.

        Setting it to ``True`` re-saves every key, for changes made inside a
        value (``session["cart"].append(x)``); setting it to ``False`` while
        changes are pending raises :class:`~persession.SessionError`.
        """
        return self._changed()

    @modified.setter
    def modified(self, value: bool) -> None:
        if value:
            self.mark_modified()
        elif self._changed():
            raise SessionError("persession tracks changes itself; pending changes cannot be unmarked")

    @property
    def permanent(self) -> bool:
        """Whether the session's cookie outlives the browser session.

        persession decides that for every session with ``max_age``; setting
        this to the value it has is allowed (a no-op), the other raises
        :class:`~persession.SessionError`.
        """
        return self.persistent_cookie

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if bool(value) != self.persistent_cookie:
            hint = "max_age=None" if self.persistent_cookie else "a max_age"
            raise SessionError(f"session cookies are configured for all sessions at once: pass {hint} to init_app")


class _BrowserFlaskSession(FlaskSession):
    """A :class:`FlaskSession` whose cookie ends with the browser session (``max_age=None``)."""

    __slots__ = ()
    persistent_cookie: ClassVar[bool] = False


# Flask annotates sessions as SessionMixin; register the class so isinstance() agrees.
SessionMixin.register(FlaskSession)


class MissingSession(NullSession):
    """``flask.session`` when no persession middleware wrapped the request.

    Reads see an empty session; writes raise
    :class:`~persession.SessionNotAvailable` naming the fix. Flask never saves it.

    .. versionadded:: 0.1
    """

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise SessionNotAvailable("no persession session in this request", _HINT)

    def __setitem__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def __delitem__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def clear(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def pop(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def popitem(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()

    def setdefault(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail()


class PersessionInterface(SessionInterface):
    """A Flask session interface that hands Flask the session persession's WSGI middleware loaded.

    It reads ``environ["persession.session"]``; storage, cookies and saving are
    the middleware's, which must wrap ``app.wsgi_app`` (:func:`init_app` does
    both). Requests the middleware did not see (``app.test_request_context()``)
    get a :class:`MissingSession`.

    :param permanent: whether the middleware's cookies outlive the browser
        session (its ``max_age`` is not ``None``): what ``session.permanent``
        reports. Default ``True``, as persession's default ``max_age``.

    .. versionadded:: 0.1
    """

    null_session_class = MissingSession

    def __init__(self, *, permanent: bool = True) -> None:
        self.permanent = permanent
        #: The ``session_class`` the middleware must build its sessions with (:func:`init_app` passes it).
        self.session_class: type[FlaskSession] = FlaskSession if permanent else _BrowserFlaskSession

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        """The middleware's session for this request; ``None`` (then a :class:`MissingSession`) without one.

        The middleware must build :class:`FlaskSession` objects
        (``SessionMiddleware(..., session_class=interface.session_class)``).
        """
        session = request.environ.get(ENVIRON_KEY)
        if not isinstance(session, FlaskSession):
            return None  # Flask then uses make_null_session(): a MissingSession naming the fix
        return cast(SessionMixin, session)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Commit the session now, with the response's status: the middleware sends the store's write.

        The middleware reads the store's answer and sets the cookie when the
        response starts; sending the write here lets the store work while
        Werkzeug turns the response into WSGI.
        """
        commit = current_request.environ.get(COMMIT_KEY)
        if commit is not None:
            commit(response.status_code)


def get_session() -> FlaskSession:
    """``flask.session``, typed as :class:`FlaskSession` (Flask types it as ``SessionMixin``).

    :raises SessionNotAvailable: outside a request, or no persession middleware
        and interface handled it.

    .. versionadded:: 0.1
    """
    if not has_request_context():
        raise SessionNotAvailable("no request context", "call get_session() while Flask handles a request")
    session = current_request.environ.get(ENVIRON_KEY)
    if not isinstance(session, FlaskSession):
        raise SessionNotAvailable("flask.session is not persession's", _HINT)
    session.mark_accessed()
    return session


def _store_unavailable(error: StoreError) -> Response:
    """The error handler :func:`init_app` registers: 503 with ``Retry-After``, as the middleware answers."""
    _shell.log_unavailable(error)
    headers = [(name, value) for name, value in _shell.UNAVAILABLE_HEADERS if name != "Content-Length"]
    return Response(_shell.UNAVAILABLE_BODY, status=_shell.UNAVAILABLE_STATUS, headers=headers)


def init_app(
    app: Flask,
    *,
    secret: str | bytes | Sequence[str | bytes] | None = None,
    **options: Any,
) -> SessionMiddleware:
    """Make ``flask.session`` persession's: install the WSGI middleware, the interface and a 503 handler.

    :param app: the Flask application.
    :param secret: secret key(s), newest first; default the app's
        ``SECRET_KEY`` followed by its ``SECRET_KEY_FALLBACKS`` (unless
        ``config=`` is given).
    :param options: everything else :class:`persession.wsgi.SessionMiddleware`
        takes: ``store`` (a store, or a store URL such as
        ``"redis://cache:6379/0"`` built by
        :func:`~persession.stores.store_from_url`; default the SQLite store on
        the default file), ``config``, ``websocket_guard`` and any
        :class:`~persession.SessionConfig` option.
    :returns: the middleware (its ``store`` and ``config``), also at
        ``app.extensions["persession"]``.
    :raises ConfigError: no secret (neither ``secret=`` nor the app's
        ``SECRET_KEY``), a bad option or store URL, or ``init_app`` already
        ran for this app.

    .. versionadded:: 0.1
    """
    if EXTENSION_KEY in app.extensions:
        raise ConfigError("app", "init_app() already ran for this Flask app")
    if secret is None and "config" not in options:
        secret = _app_secrets(app)
        if secret is None:
            raise ConfigError("secret", _MISSING_KEY)
    config = options.get("config")
    max_age = config.max_age if isinstance(config, SessionConfig) else options.get("max_age", DEFAULT_MAX_AGE)
    interface = PersessionInterface(permanent=max_age is not None)
    middleware = SessionMiddleware(app.wsgi_app, secret=secret, session_class=interface.session_class, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.session_interface = interface
    app.register_error_handler(StoreError, _store_unavailable)
    app.extensions[EXTENSION_KEY] = middleware
    return middleware


def _app_secrets(app: Flask) -> list[str | bytes] | None:
    """The app's ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``, newest first; ``None`` without a key."""
    key = app.config.get("SECRET_KEY")
    if not key:
        return None
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    return [key, *fallbacks]
