"""The WSGI websocket guard (re-exported by :mod:`persession.guard`); it imports no shell."""

from __future__ import annotations

from typing import Any

from ._policy import GuardPolicy
from .exceptions import ConfigError
from .session import Session

_STATUS = {401: "401 Unauthorized", 403: "403 Forbidden"}


class WSGIWebSocketGuard:
    """Refuse ``Upgrade: websocket`` requests of logged-out users and foreign origins (WSGI).

    For flask-sock, simple-websocket and gevent-websocket, which run the
    websocket inside an ordinary WSGI request. Put it inside
    :class:`persession.wsgi.SessionMiddleware` (``websocket_guard=`` does).
    Refused requests get ``401`` or ``403`` and never reach the application.

    .. versionadded:: 0.1
    .. versionchanged:: 0.3
       No standalone mode (``secret=`` and session options).
    """

    def __init__(self, app: Any, *, policy: GuardPolicy | None = None, **options: Any) -> None:
        if options:
            raise ConfigError(
                sorted(options)[0],
                "a guard takes no session options: use SessionMiddleware(app, secret=..., websocket_guard=policy),"
                " or put the guard inside that middleware",
            )
        self.app: Any = app
        self.policy: GuardPolicy = policy if policy is not None else GuardPolicy()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self._guard(environ, start_response)

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
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        start_response(_STATUS[refusal.status], headers)
        return [body]
